//! The shape of a request body as the official SDK's request models declare it: which JSON keys
//! a body model has, which are required, and the JSON type each takes. The tables themselves are
//! generated (`bodies.rs`); `validate` walks them.

/// One body model (`MixJobReq`, `MixLayoutPane`, ...): a JSON object with these fields.
#[derive(Debug, PartialEq)]
pub struct Model {
    /// The SDK's class name, for messages and tests.
    pub name: &'static str,
    pub fields: &'static [Field],
}

/// One field of a model, by its JSON key (the SDK's `attribute_map`, not its Python name).
#[derive(Debug, PartialEq)]
pub struct Field {
    pub key: &'static str,
    /// Assigned unconditionally by the SDK model's constructor.
    pub required: bool,
    pub of: Type,
}

/// The JSON type a field takes.
#[derive(Debug, PartialEq)]
pub enum Type {
    Str,
    /// A JSON integer: Python `int` takes neither `1.5` nor `"1"`.
    Int,
    /// Any JSON number.
    Float,
    Bool,
    /// Python `object`: any JSON value.
    Any,
    Model(&'static Model),
    /// `list[T]`: a JSON array of T.
    List(Item),
    /// `dict(str, T)`: a JSON object whose values are T.
    Map(Item),
}

/// What a list or map holds; the SDK nests no container directly in another.
#[derive(Debug, PartialEq)]
pub enum Item {
    Str,
    Int,
    Float,
    Bool,
    Any,
    Model(&'static Model),
}

impl Item {
    /// The same type standing alone.
    pub fn as_type(&self) -> Type {
        match self {
            Item::Str => Type::Str,
            Item::Int => Type::Int,
            Item::Float => Type::Float,
            Item::Bool => Type::Bool,
            Item::Any => Type::Any,
            Item::Model(model) => Type::Model(model),
        }
    }
}

impl Type {
    /// What a value of this type is, as a message says it must be: "an integer", "a list".
    pub fn described(&self) -> &'static str {
        match self {
            Type::Str => "a string",
            Type::Int => "an integer",
            Type::Float => "a number",
            Type::Bool => "true or false",
            Type::Any => "any JSON value",
            Type::Model(_) | Type::Map(_) => "a JSON object",
            Type::List(_) => "a list",
        }
    }
}
