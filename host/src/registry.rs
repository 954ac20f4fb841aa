//! The registries of source and sink kinds: a config enum selected by `type`, whose
//! variants each hold a kind's config struct, and `kind()` to reach the kind's trait. The
//! enum only dispatches; each kind lives in its own module.

/// `registry!(#[attrs] Enum: Trait { Variant(ConfigType), … })`: `type = "variant"` (in
/// snake case) selects `Variant`, and `Enum::kind()` gives its config as `&dyn Trait`.
macro_rules! registry {
    ($(#[$meta:meta])* $enum:ident: $kind_trait:ident { $($kind:ident($config:ty)),* $(,)? }) => {
        $(#[$meta])*
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $enum {
            $($kind($config)),*
        }

        impl $enum {
            /// The kind it configures.
            pub fn kind(&self) -> &dyn $kind_trait {
                match self {
                    $($enum::$kind(c) => c),*
                }
            }
        }
    };
}

pub(crate) use registry;
