//! The workspace as `cargo metadata` describes it: its crates, which of them
//! publish, what they depend on and in which order they go to a registry.
//!
//! Everything here comes from Cargo itself (through `cargo_metadata`), so
//! inherited fields (`version.workspace = true`), renamed dependencies and
//! target-specific tables are resolved the way Cargo resolves them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cargo_metadata::{DependencyKind, MetadataCommand, Package};
use semver::{Version, VersionReq};

/// The crates of one workspace.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The directory holding the workspace's `Cargo.toml`.
    pub(crate) root: PathBuf,
    /// Every member, sorted by name.
    pub(crate) crates: Vec<Crate>,
}

/// One member crate.
#[derive(Debug)]
pub(crate) struct Crate {
    /// The package name.
    pub(crate) name: String,
    /// Its version, resolved (inherited versions included).
    pub(crate) version: Version,
    /// Its `Cargo.toml`.
    pub(crate) manifest: PathBuf,
    /// Whether `cargo publish` may publish it (no `publish = false`).
    pub(crate) publishable: bool,
    /// Its features, `default` left out, in name order.
    pub(crate) features: Vec<String>,
    /// What it declares it depends on, every kind and target.
    pub(crate) dependencies: Vec<Dependency>,
    /// The package's own fields, as `cargo package` would publish them.
    pub(crate) package: Package,
}

/// One declared dependency of a crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dependency {
    /// The package depended on (not its rename).
    pub(crate) name: String,
    /// Normal, dev or build.
    pub(crate) kind: Kind,
    /// The version requirement; `*` when none was written.
    pub(crate) req: VersionReq,
    /// Its `path`, when it has one.
    pub(crate) path: Option<PathBuf>,
}

/// The kind of a dependency, as its table names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `[dependencies]`.
    Normal,
    /// `[dev-dependencies]`.
    Dev,
    /// `[build-dependencies]`.
    Build,
}

impl Kind {
    /// The manifest table that declares this kind.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Kind::Normal => "dependencies",
            Kind::Dev => "dev-dependencies",
            Kind::Build => "build-dependencies",
        }
    }
}

impl Dependency {
    /// Whether `cargo publish` keeps this dependency in the published
    /// manifest. A dev-dependency with a path and no version is dropped
    /// (the way the crates here reach the facade for their doctests);
    /// anything else stays and must be resolvable from the registry.
    pub(crate) fn survives_publish(&self) -> bool {
        !(self.kind == Kind::Dev && self.path.is_some() && self.req == VersionReq::STAR)
    }
}

impl Workspace {
    /// Reads the workspace whose root manifest is in `root`, with
    /// `cargo metadata --no-deps` (no network, no lock file changes).
    ///
    /// # Errors
    ///
    /// When cargo cannot be run or rejects a manifest.
    pub(crate) fn load(root: &Path) -> Result<Self> {
        let metadata = MetadataCommand::new()
            .manifest_path(root.join("Cargo.toml"))
            .no_deps()
            .exec()
            .with_context(|| format!("could not read the workspace at {}", root.display()))?;
        let members: BTreeSet<_> = metadata.workspace_members.iter().collect();
        let mut crates: Vec<Crate> = metadata
            .packages
            .iter()
            .filter(|package| members.contains(&package.id))
            .map(Crate::from_package)
            .collect();
        crates.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            root: metadata.workspace_root.into_std_path_buf(),
            crates,
        })
    }

    /// The crate called `name`, if it is a member.
    pub(crate) fn get(&self, name: &str) -> Option<&Crate> {
        self.crates.iter().find(|krate| krate.name == name)
    }

    /// The members that publish, by name.
    pub(crate) fn publishable(&self) -> impl Iterator<Item = &Crate> {
        self.crates.iter().filter(|krate| krate.publishable)
    }

    /// The dependencies of `krate` on other members of this workspace.
    pub(crate) fn internal_dependencies<'a>(
        &'a self,
        krate: &'a Crate,
    ) -> impl Iterator<Item = &'a Dependency> {
        krate
            .dependencies
            .iter()
            .filter(|dep| self.get(&dep.name).is_some())
    }

    /// The publishable crates in the order they must reach a registry:
    /// every crate after each member it depends on through a dependency
    /// that survives publishing (normal, build, and versioned dev ones);
    /// ties in name order, so the order is the same on every machine.
    ///
    /// # Errors
    ///
    /// When those dependencies form a cycle, which no registry can take.
    pub(crate) fn publish_order(&self) -> Result<Vec<&Crate>> {
        let publishable: BTreeMap<&str, &Crate> = self
            .publishable()
            .map(|krate| (krate.name.as_str(), krate))
            .collect();
        let mut waiting: BTreeMap<&str, BTreeSet<&str>> = publishable
            .values()
            .map(|krate| {
                let needs = krate
                    .dependencies
                    .iter()
                    .filter(|dep| dep.survives_publish() && dep.name != krate.name)
                    .filter_map(|dep| publishable.get_key_value(dep.name.as_str()))
                    .map(|(name, _)| *name)
                    .collect();
                (krate.name.as_str(), needs)
            })
            .collect();
        let mut order = Vec::with_capacity(waiting.len());
        while !waiting.is_empty() {
            let Some(ready) = waiting
                .iter()
                .find(|(_, needs)| needs.is_empty())
                .map(|(name, _)| *name)
            else {
                let stuck: Vec<&str> = waiting.keys().copied().collect();
                bail!(
                    "the publishable crates {} depend on each other in a cycle \
                     (through dependencies that cargo publish keeps)",
                    stuck.join(", ")
                );
            };
            waiting.remove(ready);
            for needs in waiting.values_mut() {
                needs.remove(ready);
            }
            order.push(publishable[ready]);
        }
        Ok(order)
    }
}

impl Crate {
    /// Takes what xtask needs out of cargo's description of a package.
    fn from_package(package: &Package) -> Self {
        let dependencies = package
            .dependencies
            .iter()
            .map(|dep| Dependency {
                name: dep.name.clone(),
                kind: match dep.kind {
                    DependencyKind::Development => Kind::Dev,
                    DependencyKind::Build => Kind::Build,
                    _ => Kind::Normal,
                },
                req: dep.req.clone(),
                path: dep.path.clone().map(|path| path.into_std_path_buf()),
            })
            .collect();
        Self {
            name: package.name.clone(),
            version: package.version.clone(),
            manifest: package.manifest_path.clone().into_std_path_buf(),
            // `publish = false` is an empty list of allowed registries.
            publishable: package.publish.as_ref().is_none_or(|to| !to.is_empty()),
            features: package
                .features
                .keys()
                .filter(|name| *name != "default")
                .cloned()
                .collect(),
            dependencies,
            package: package.clone(),
        }
    }

    /// The directory holding the crate's manifest.
    pub(crate) fn dir(&self) -> &Path {
        self.manifest.parent().unwrap_or(Path::new("."))
    }

    /// Whether the crate has a library target.
    pub(crate) fn has_lib(&self) -> bool {
        self.package
            .targets
            .iter()
            .any(|target| target.kind.iter().any(|kind| kind.to_string() == "lib"))
    }
}

/// Unit tests for the dependency rules.
#[cfg(test)]
mod tests {
    use super::*;

    /// A dependency of `kind` with `req` and maybe a path.
    fn dep(kind: Kind, req: &str, path: bool) -> Dependency {
        Dependency {
            name: "nerve".to_owned(),
            kind,
            req: req.parse().unwrap(),
            path: path.then(|| PathBuf::from("../nerve")),
        }
    }

    /// Only a path-only dev-dependency is dropped by `cargo publish`.
    #[test]
    fn path_only_dev_dependencies_do_not_survive_publish() {
        assert!(!dep(Kind::Dev, "*", true).survives_publish());
        assert!(dep(Kind::Dev, "0.1.0", true).survives_publish());
        assert!(dep(Kind::Normal, "*", true).survives_publish());
        assert!(dep(Kind::Build, "*", true).survives_publish());
        assert!(dep(Kind::Dev, "*", false).survives_publish());
    }
}
