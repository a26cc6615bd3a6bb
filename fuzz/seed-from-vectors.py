#!/usr/bin/env python3
"""Seed the fuzz corpora from the recorded transcripts in shared/interop/vectors.

Usage: fuzz/seed-from-vectors.py VECTORS_DIR CORPUS_ROOT
Writes one file per interesting record into CORPUS_ROOT/<target>/. Idempotent.
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

def main(vdir, root):
    n = 0
    for name in sorted(os.listdir(vdir)):
        if not name.endswith('.txt'): continue
        stream = {'C': bytearray(), 'S': bytearray()}
        for line in open(os.path.join(vdir, name), encoding='utf-8'):
            m = re.match(r'^([CS])> (LINE|TXN|RAW) (.*)$', line.rstrip('\n'))
            if not m: continue
            who, kind, rest = m.groups(); s = strings(rest)
            if kind == 'LINE':
                save(root, 'banner_line', s[0]); save(root, 'identity_line', s[0])
            elif kind == 'TXN':
                stream[who] += s[0] + s[1]
                save(root, 'request_parse', s[1]); save(root, 'reply_parse', s[1])
            elif kind == 'RAW':
                stream[who] += s[0]
            n += 1
        for who, data in stream.items():
            if data: save(root, 'frame_decoder', b'\x07' + bytes(data))
    print(f"seeded {n} records from {vdir} into {root}")

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
