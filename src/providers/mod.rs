//! Platforms. Each platform is one module implementing [`Provider`], with one file per resource
//! kind; the core stages (render, diff, plan, apply) only ever see this trait.
//!
//! A provider does two kinds of work. Offline, it reads manifest documents: where the namespace
//! part of an identity is, how the default namespace is written in, which JSON Schema a document
//! follows, and how a document turns into resources. Online, it lists live resources (one call
//! per kind, never one per resource) and carries out one step of a plan, waiting until the
//! platform says the change is done.

/// A provider's kinds as a closed type, from one list of `Variant = "name", KindInfo { … };`
/// (`providers/<p>/kind.rs`): the `Kind` enum; `Kind::ALL`, in the list's order;
/// `Kind::name`, the one map from a kind to the name carried in `ResourceId.kind` (opaque to
/// the core), plans and messages; `Kind::parse`, its inverse, used where a resource id enters
/// the provider (an unknown name is `None`, which the caller reports as an error); and
/// `KINDS`, the `KindInfo` table. Dispatch matches on `Kind`, so the compiler checks that
/// every kind is handled.
macro_rules! closed_kinds {
    ($($(#[$doc:meta])* $kind:ident = $name:literal, $info:expr;)+) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$doc])* $kind,)+
        }

        impl Kind {
            /// Every kind, in the order of the `KindInfo` table.
            pub const ALL: [Kind; [$($name),+].len()] = [$(Kind::$kind),+];

            /// The name in `ResourceId.kind`, plans and messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)+
                }
            }

            pub fn parse(name: &str) -> Option<Kind> {
                Kind::ALL.into_iter().find(|k| k.name() == name)
            }
        }

        /// The `KindInfo` table, derived from `Kind`.
        pub const KINDS: &[(&str, $crate::model::KindInfo)] = &[$(($name, $info)),+];
    };
}

/// The platform registry: one folder per platform (`src/providers/<p>/`, whose `mod.rs` has a
/// `pub static PLATFORM: PlatformDef`), and its name here. The first is the default platform.
macro_rules! platforms {
    ($($p:ident),+ $(,)?) => {
        $(pub mod $p;)+
        /// Every platform capstan can manage, in registry order.
        pub static PLATFORMS: &[&PlatformDef] = &[$(&$p::PLATFORM),+];
    };
}

platforms!(apcera, marathon, tsuru, dcos);

pub use crate::apply::{Drive, Operation};
pub use crate::diff::Compare;
pub use crate::model::{Check, CheckReport, PlatformPreview, PreviewAction, ScopeSummary, Verb};
pub use crate::render::{Decode, DocumentPart};

pub use crate::http::{ApiError, Connection};

/// Everything capstan asks of a platform, split by the stage that asks: render's [`Decode`],
/// diff's [`Compare`] and apply's [`Drive`]. A platform implements the three; this trait only
/// names them together.
pub trait Provider: Decode + Compare + Drive {}

impl<T: Decode + Compare + Drive + ?Sized> Provider for T {}

/// Builds a platform's provider from a connection (None: offline) and the owner mark.
pub type NewProvider = fn(Option<Connection>, &str) -> anyhow::Result<Box<dyn Provider>>;

/// What capstan knows of one platform: everything else reaches the platform through the
/// provider `new` builds.
pub struct PlatformDef {
    /// The name capstan.yaml's `platform` and a target's `platform` use.
    pub name: &'static str,
    /// The platform's JSON Schemas (its manifests and kinds), by path under `schemas/`, as the
    /// platform's module embeds them from `schemas/<name>/`.
    pub schemas: &'static [(&'static str, &'static str)],
    /// Build the provider; `connection` is None for offline work (render, validate).
    pub new: NewProvider,
}

/// The platform called `name`, or an error that lists the known ones.
pub fn platform(name: &str) -> anyhow::Result<&'static PlatformDef> {
    PLATFORMS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow::anyhow!("unknown platform {name:?}: expected one of {}", platform_names().join(", ")))
}

/// The registered platforms' names, in registry order.
pub fn platform_names() -> Vec<&'static str> {
    PLATFORMS.iter().map(|p| p.name).collect()
}

/// The platform manifests are written for when neither capstan.yaml nor a target says.
pub fn default_platform() -> &'static str {
    PLATFORMS[0].name
}

/// Build the provider for a platform; `connection` is None for offline work (render, validate).
pub fn provider_for(
    platform_name: &str,
    connection: Option<Connection>,
    owner: &str,
) -> anyhow::Result<Box<dyn Provider>> {
    let def = platform(platform_name)?;
    // The schemas reach validation through here: `base` knows no platform.
    crate::base::schema::add_platform_files(|| PLATFORMS.iter().flat_map(|p| p.schemas.iter().copied()).collect());
    (def.new)(connection, owner)
}
