#!/usr/bin/env python3
"""Seed the fuzz corpora from the recorded transcripts in shared/interop/vectors.

Usage: fuzz/seed-from-vectors.py VECTORS_DIR CORPUS_ROOT
Writes one file per interesting record into CORPUS_ROOT/<target>/. Idempotent.

Also seeds the targets that are not fed from transcripts:
* server_session: each TLS transcript's client side (lines and transactions,
  EOF) in the target's op encoding, under a few flag bytes (peer IP, key status);
* server_conn: the flag bytes alone (1 = a genuine ClientHello goes first),
  and each TLS transcript's client side behind a real handshake (flag 4);
* keys_pem, policy_parse: the key and policy fixtures committed in this repository;
* every target: the inputs kept in fuzz/regressions/<target>/ (past failures).
"""
import hashlib, os, re, sys

def unescape(s):
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c != '\\':
            out += c.encode('latin-1') if ord(c) < 256 else c.encode(); i += 1; continue
        n = s[i + 1]; i += 2
        if n == 'x': out.append(int(s[i:i + 2], 16)); i += 2
        else: out.append({'\\': 92, '"': 34, 'n': 10, 'r': 13, 't': 9, '0': 0}[n])
    return bytes(out)

def strings(rest):
    return [unescape(m) for m in re.findall(r'"((?:[^"\\]|\\.)*)"', rest)]

def save(root, target, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), 'wb') as f: f.write(data)

def session_ops(client, eof):
    """The server_session op encoding: a length byte (<= 0xFC) and that many bytes; 0xFD = EOF."""
    out = bytearray()
    for rec in client:
        for i in range(0, len(rec), 0xFC):
            part = rec[i:i + 0xFC]
            out.append(len(part)); out += part
    if eof: out.append(0xFD)
    return bytes(out)

def repo_fixtures(root):
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    for d, target, exts in [('core/src/keys/testdata', 'keys_pem', ('.pub', '.priv', '.id')),
                            ('core/src/tls/testdata', 'keys_pem', ('.pem',))]:
        p = os.path.join(top, d)
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                if name.endswith(exts):
                    save(root, target, open(os.path.join(p, name), 'rb').read())
    for d, dirs, files in os.walk(top):
        dirs[:] = [x for x in dirs if x not in ('target', '.git', 'corpus', 'artifacts') and not x.startswith('target-')]
        for name in files:
            if name.endswith('.cf') and os.path.getsize(os.path.join(d, name)) < 64 * 1024:
                save(root, 'policy_parse', open(os.path.join(d, name), 'rb').read())
    for flags in (0, 1, 2, 3):
        save(root, 'server_conn', bytes([flags]))
    # Inputs that once failed (fuzz/regressions/<target>/*) stay in the corpus,
    # so every CI smoke run replays them.
    reg = os.path.join(here, 'regressions')
    if os.path.isdir(reg):
        for target in sorted(t for t in os.listdir(reg) if os.path.isdir(os.path.join(reg, t))):
            for name in sorted(os.listdir(os.path.join(reg, target))):
                save(root, target, open(os.path.join(reg, target, name), 'rb').read())

def main(vdir, root):
    n = 0
    repo_fixtures(root)
    for name in sorted(os.listdir(vdir)):
        if not name.endswith('.txt'): continue
        stream = {'C': bytearray(), 'S': bytearray()}
        client, eof, tls = [], False, True
        for line in open(os.path.join(vdir, name), encoding='utf-8'):
            if line.startswith('# tls: none'): tls = False
            if line.startswith('C> EOF'): eof = True
            m = re.match(r'^([CS])> (LINE|TXN|RAW) (.*)$', line.rstrip('\n'))
            if not m: continue
            who, kind, rest = m.groups(); s = strings(rest)
            if who == 'C' and kind in ('LINE', 'TXN'): client.append(b''.join(s[:2]))
            if kind == 'LINE':
                save(root, 'banner_line', s[0]); save(root, 'identity_line', s[0])
            elif kind == 'TXN':
                stream[who] += s[0] + s[1]
                save(root, 'request_parse', s[1]); save(root, 'reply_parse', s[1])
            elif kind == 'RAW':
                stream[who] += s[0]
            n += 1
        if tls and client:
            for flags in (0x00, 0x01, 0x02, 0x04, 0x09, 0x10, 0x24):
                save(root, 'server_session', bytes([flags]) + session_ops(client, eof))
            # server_conn flag 4: the same plaintext behind a real handshake.
            save(root, 'server_conn', bytes([0x04]) + session_ops(client, eof))
        for who, data in stream.items():
            if data: save(root, 'frame_decoder', b'\x07' + bytes(data))
    print(f"seeded {n} records from {vdir} into {root}")

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
