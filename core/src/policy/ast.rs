//! Syntax tree of a CFEngine 3 policy file, as produced by [`super::parse`].
//!
//! The tree keeps every block, even the ones a server never evaluates, so
//! that any valid policy file can be loaded and its errors reported with
//! positions.

/// A 1-based line and column in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: u32,
    /// Column (in bytes), starting at 1.
    pub col: u32,
}

/// One parsed policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFile {
    /// The path the file was read from (as given by the loader).
    pub path: String,
    /// Bundles, bodies and promise blocks, in file order.
    pub blocks: Vec<Block>,
}

/// A top-level block.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// `bundle TYPE NAME(args) { ... }`
    Bundle(Bundle),
    /// `body TYPE NAME(args) { ... }`
    Body(Body),
    /// `promise TYPE NAME { ... }` (custom promise types, 3.17+).
    Promise(Body),
}

/// `bundle TYPE NAME(args) { sections }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// Bundle type: `agent`, `common`, `server`, `edit_line`, ...
    pub kind: String,
    /// Bundle name (may contain a `ns:` prefix).
    pub name: String,
    /// Namespace from the last `body file control { namespace => ... }`.
    pub namespace: String,
    /// Parameter names.
    pub args: Vec<String>,
    /// Promise-type sections in file order.
    pub sections: Vec<Section>,
    /// Where the `bundle` keyword is.
    pub pos: Pos,
}

/// One `promise_type:` section of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// `vars`, `classes`, `access`, `roles`, `files`, ...
    pub promise_type: String,
    /// Promises in order.
    pub promises: Vec<Promise>,
    /// Where the promise type is written.
    pub pos: Pos,
}

/// One promise.
#[derive(Debug, Clone, PartialEq)]
pub struct Promise {
    /// The promiser string (escapes already removed).
    pub promiser: String,
    /// `-> promisee` if given.
    pub promisee: Option<Rval>,
    /// The class guard in effect (`any` if none).
    pub guard: String,
    /// Constraints (`lval => rval`) in order.
    pub constraints: Vec<Constraint>,
    /// Where the promiser is.
    pub pos: Pos,
}

/// `lval => rval`, in a promise or body.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// Attribute name.
    pub lval: String,
    /// Attribute value.
    pub rval: Rval,
    /// Class guard in effect (bodies only; `any` in promises).
    pub guard: String,
    /// Where the attribute name is.
    pub pos: Pos,
}

/// `body TYPE NAME(args) { attributes }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// Body type: `common`, `server`, `copy_from`, ...
    pub kind: String,
    /// Body name (`control` for control bodies).
    pub name: String,
    /// Namespace in effect.
    pub namespace: String,
    /// Parameter names.
    pub args: Vec<String>,
    /// Attributes with their class guards.
    pub attrs: Vec<Constraint>,
    /// Where the `body` keyword is.
    pub pos: Pos,
}

/// A right-hand value.
#[derive(Debug, Clone, PartialEq)]
pub enum Rval {
    /// A quoted string, or a naked `$(var)` / `@(var)`.
    Scalar(String),
    /// A bare identifier (a body or bundle reference, `inf`, ...).
    Symbol(String),
    /// `{ item, ... }`.
    List(Vec<Rval>),
    /// `name(args)`.
    Call(FnCall),
}

/// A function call or a parameterised body reference.
#[derive(Debug, Clone, PartialEq)]
pub struct FnCall {
    /// Function name.
    pub name: String,
    /// Arguments.
    pub args: Vec<Rval>,
    /// Where the name is.
    pub pos: Pos,
}
