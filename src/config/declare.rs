//! The `settings!` macro: one declaration gives each setting its section, field, key,
//! type, default, bounds and documentation, and from it the typed sections, the flat
//! file-and-environment shape, the list of known keys, the bound checks and the reference
//! that the README's table is tested against. Nothing about a setting is written twice.

/// What a setting accepts beyond its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounds {
    /// Every value of the type.
    Any,
    /// A whole number from `.0` to `.1`, both included.
    Range(u64, u64),
    /// What a check function accepts, described for people (`must be …`).
    Check(&'static str),
}

impl Bounds {
    /// The bounds as a README cell and error messages show them.
    pub fn describe(self) -> String {
        match self {
            Bounds::Any => String::new(),
            Bounds::Range(min, max) => format!("{min}–{max}"),
            Bounds::Check(text) => text.to_owned(),
        }
    }
}

/// One configuration setting, as declared.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The section it belongs to, e.g. `sync` (`Config::sync`).
    pub section: &'static str,
    /// Its key: the name in the TOML file, and in upper case after `MILLWRIGHT_` the
    /// environment variable. Keys are flat (`sync_page_size`, not `[sync] page_size`).
    pub key: &'static str,
    /// What it does, from its doc comment.
    pub doc: &'static str,
    pub bounds: Bounds,
}

impl Setting {
    /// `MILLWRIGHT_SYNC_PAGE_SIZE` for `sync_page_size`.
    pub fn env_var(&self) -> String {
        format!("{}{}", super::ENV_PREFIX, self.key.to_ascii_uppercase())
    }

    /// The doc comment as one line of text.
    pub fn doc_line(&self) -> String {
        one_line(self.doc)
    }
}

/// A group of settings: a field of `Config`.
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub name: &'static str,
    pub doc: &'static str,
}

impl Section {
    /// The doc comment as one line of text.
    pub fn doc_line(&self) -> String {
        one_line(self.doc)
    }
}

/// A key that no longer configures anything. Files and environments that still set it keep
/// working; the start logs a warning that names it.
#[derive(Clone, Copy, Debug)]
pub struct RetiredKey {
    pub key: &'static str,
    /// Why it went and what to do instead.
    pub why: &'static str,
}

impl RetiredKey {
    /// Why it went, as one line of text.
    pub fn reason(&self) -> String {
        one_line(self.why)
    }
}

/// Joins a doc comment's lines (each starts with a space) into one line.
pub fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A number a range can bound.
pub trait Bounded {
    fn magnitude(&self) -> u64;
}

impl Bounded for u32 {
    fn magnitude(&self) -> u64 {
        u64::from(*self)
    }
}

impl Bounded for u64 {
    fn magnitude(&self) -> u64 {
        *self
    }
}

impl Bounded for usize {
    fn magnitude(&self) -> u64 {
        u64::try_from(*self).unwrap_or(u64::MAX)
    }
}

/// `Err(message)` naming the bounds when `value` is outside `min..=max`.
pub fn check_range(value: &impl Bounded, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value.magnitude()) {
        Ok(())
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

/// Declares the configuration: `sections { … }` then `retired { … }`. Each section becomes a
/// `pub struct` with a `Default`, and a field of `Config`; each setting is
///
/// ```text
/// /// Its documentation (user-facing: the README's table shows it).
/// key => field: Type = default [, range(min, max)] [, check(function, "what it accepts")];
/// ```
///
/// `#[serde(...)]` attributes before the key go to the file-and-environment shape.
macro_rules! settings {
    (@bounds) => { $crate::config::declare::Bounds::Any };
    (@bounds range($min:expr, $max:expr)) => { $crate::config::declare::Bounds::Range($min, $max) };
    (@bounds check($accepts:literal)) => { $crate::config::declare::Bounds::Check($accepts) };
    (
        sections {
            $(
                $(#[doc = $section_doc:literal])*
                $section:ident: $Section:ident {
                    $(
                        $(#[doc = $doc:literal])*
                        $(#[serde($($serde:tt)*)])*
                        $key:ident => $field:ident: $ty:ty = $default:expr
                        $(, range($min:expr, $max:expr))?
                        $(, check($check:path, $accepts:literal))?
                        ;
                    )*
                }
            )*
        }
        retired {
            $(
                $(#[doc = $why:literal])*
                $old:ident;
            )*
        }
    ) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Clone)]
            pub struct $Section {
                $(
                    $(#[doc = $doc])*
                    pub $field: $ty,
                )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self {
                        $($field: $default,)*
                    }
                }
            }
        )*

        /// The whole configuration, in sections. Load it with [`Config::load`]; tests and
        /// benchmarks build it from `Config::default()`.
        #[derive(Clone, Default)]
        pub struct Config {
            $(
                $(#[doc = $section_doc])*
                pub $section: $Section,
            )*
            /// Knobs only tests turn; never read from the file or the environment.
            pub testing: TestingSettings,
        }

        /// Every section, in declaration order.
        pub const SECTIONS: &[$crate::config::declare::Section] = &[
            $(
                $crate::config::declare::Section {
                    name: stringify!($section),
                    doc: concat!($($section_doc, "\n",)*),
                },
            )*
        ];

        /// Every setting, in declaration order.
        pub const SETTINGS: &[$crate::config::declare::Setting] = &[
            $($(
                $crate::config::declare::Setting {
                    section: stringify!($section),
                    key: stringify!($key),
                    doc: concat!($($doc, "\n",)*),
                    bounds: settings!(@bounds $(range($min, $max))? $(check($accepts))?),
                },
            )*)*
        ];

        /// Keys that no longer configure anything, still accepted.
        pub const RETIRED: &[$crate::config::declare::RetiredKey] = &[
            $(
                $crate::config::declare::RetiredKey {
                    key: stringify!($old),
                    why: concat!($($why, "\n",)*),
                },
            )*
        ];

        /// The configuration as the file and the environment spell it: one flat key each.
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct FileAndEnv {
            $($(
                $(#[serde($($serde)*)])*
                $key: $ty,
            )*)*
            $(
                #[serde(skip_serializing)]
                $old: Option<serde::de::IgnoredAny>,
            )*
        }

        impl Default for FileAndEnv {
            fn default() -> Self {
                Self::from(Config::default())
            }
        }

        impl From<Config> for FileAndEnv {
            fn from(config: Config) -> Self {
                Self {
                    $($(
                        $key: config.$section.$field,
                    )*)*
                    $($old: None,)*
                }
            }
        }

        impl FileAndEnv {
            /// The configuration it sets, and the retired keys it still sets.
            fn into_config(self) -> (Config, Vec<&'static $crate::config::declare::RetiredKey>) {
                let mut set: Vec<&'static str> = Vec::new();
                $(
                    if self.$old.is_some() {
                        set.push(stringify!($old));
                    }
                )*
                let retired = RETIRED.iter().filter(|r| set.contains(&r.key)).collect();
                let config = Config {
                    $(
                        $section: $Section {
                            $($field: self.$key,)*
                        },
                    )*
                    testing: TestingSettings::default(),
                };
                (config, retired)
            }
        }

        impl Config {
            /// Every declared bound, in declaration order; the error names the key.
            fn check_bounds(&self) -> Result<(), ConfigError> {
                $($(
                    $(
                        $crate::config::declare::check_range(&self.$section.$field, $min, $max)
                            .map_err(|message| ConfigError::Invalid {
                                key: stringify!($key),
                                message,
                            })?;
                    )?
                    $(
                        if !$check(&self.$section.$field) {
                            return Err(ConfigError::Invalid {
                                key: stringify!($key),
                                message: concat!("must be ", $accepts).to_owned(),
                            });
                        }
                    )?
                )*)*
                Ok(())
            }
        }
    };
}

pub(super) use settings;
