//! `cargo xtask publish [--dry-run] [--registry NAME]`: publishes the
//! release at `HEAD` crate by crate in dependency order, skipping every
//! version the registry already has, so a publish that stopped halfway
//! (a network error, a rate limit) is finished by running it again.
//!
//! It refuses a dirty tree and a `HEAD` without the release's tag
//! (`vVERSION`, as `cargo xtask release` makes it): what is published is
//! exactly what was tagged. `--dry-run` asks the registry and prints the
//! plan without publishing.

use std::process::Command;

use anyhow::{Context, Result, bail};
use semver::Version;

use crate::cargo::{Cargo, workspace_root};
use crate::git::Git;
use crate::metadata::Workspace;

/// The help text of the publish command.
pub(crate) const USAGE: &str = "
  cargo xtask publish [--dry-run] [--registry NAME]
            Publish the tagged release at HEAD, crate by crate in dependency
            order, skipping versions the registry already has.
            --dry-run: ask the registry and print the plan only
";

/// The arguments of `cargo xtask publish`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// Print the plan, publish nothing.
    pub(crate) dry_run: bool,
    /// The registry to publish to; crates.io when `None`.
    pub(crate) registry: Option<String>,
}

/// Reads the arguments after `publish`.
///
/// # Errors
///
/// On an unknown argument or a `--registry` without a name.
pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dry-run" => options.dry_run = true,
            "--registry" => {
                let Some(name) = args.next().filter(|name| !name.starts_with('-')) else {
                    bail!("--registry needs the registry's name");
                };
                options.registry = Some(name);
            }
            other => bail!("unexpected argument `{other}` for publish, see `cargo xtask --help`"),
        }
    }
    Ok(options)
}

/// What happens to one crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// The registry has this version already.
    Skip,
    /// It is published.
    Publish,
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// The crate.
    pub(crate) name: String,
    /// Its version.
    pub(crate) version: Version,
    /// What is done with it.
    pub(crate) action: Action,
}

/// Runs `cargo xtask publish` on this workspace.
///
/// # Errors
///
/// On a refusal, a registry that cannot be asked, or a failed publish.
pub(crate) fn run(options: &Options) -> Result<()> {
    let root = workspace_root();
    let git = Git::new(root);
    let dirty = git.uncommitted()?;
    if !dirty.trim().is_empty() {
        bail!(
            "refusing to publish: the working tree has uncommitted changes:\n{}",
            dirty.trim_end()
        );
    }
    let workspace = Workspace::load(root)?;
    let Some(version) = workspace
        .publish_order()?
        .first()
        .map(|krate| krate.version.clone())
    else {
        bail!("nothing to publish: no crate of the workspace publishes");
    };
    // Before asking the registry anything: only a tagged release goes out.
    let tag = format!("v{version}");
    if !git.tags_at_head()?.contains(&tag) {
        bail!(
            "refusing to publish {version}: HEAD is not tagged {tag}; \
             publish the commit `cargo xtask release {version}` made"
        );
    }
    let steps = plan(&workspace, |name, version| {
        registry_has(name, version, options.registry.as_deref())
    })?;
    print(&steps, options);
    if options.dry_run {
        println!("xtask: dry run, nothing published");
        return Ok(());
    }
    for step in steps.iter().filter(|step| step.action == Action::Publish) {
        let mut args = vec!["publish", "--locked", "-p", &step.name];
        if let Some(registry) = &options.registry {
            args.extend(["--registry", registry]);
        }
        // cargo waits until the registry serves the new version, so the
        // next crate resolves its dependency on this one.
        Cargo::new(args).run().with_context(|| {
            format!(
                "publishing {} {} failed; run cargo xtask publish again to go on from here",
                step.name, step.version
            )
        })?;
    }
    println!("xtask: published {version}");
    Ok(())
}

/// The publish plan: every publishable crate in dependency order, each
/// skipped when `has(name, version)` says the registry has it.
///
/// # Errors
///
/// When the crates are not all at one version, their dependencies form a
/// cycle, or `has` fails.
pub(crate) fn plan(
    workspace: &Workspace,
    mut has: impl FnMut(&str, &Version) -> Result<bool>,
) -> Result<Vec<Step>> {
    let order = workspace.publish_order()?;
    let versions: Vec<String> = order
        .iter()
        .map(|krate| format!("{} {}", krate.name, krate.version))
        .collect();
    if order
        .windows(2)
        .any(|pair| pair[0].version != pair[1].version)
    {
        bail!(
            "the publishable crates are not at one version ({}); release them with cargo xtask release",
            versions.join(", ")
        );
    }
    order
        .into_iter()
        .map(|krate| {
            let action = if has(&krate.name, &krate.version)? {
                Action::Skip
            } else {
                Action::Publish
            };
            Ok(Step {
                name: krate.name.clone(),
                version: krate.version.clone(),
                action,
            })
        })
        .collect()
}

/// Prints the plan, one crate a line.
fn print(steps: &[Step], options: &Options) {
    let registry = options.registry.as_deref().unwrap_or("crates.io");
    println!("xtask: publish to {registry}, in this order:");
    for step in steps {
        let what = match step.action {
            Action::Skip => "skip: the registry has it",
            Action::Publish => "publish",
        };
        println!("  {} {}: {what}", step.name, step.version);
    }
}

/// Whether the registry has `name` at `version`, asked with `cargo info`
/// from outside the workspace (inside, cargo would describe the local
/// crate).
fn registry_has(name: &str, version: &Version, registry: Option<&str>) -> Result<bool> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let spec = format!("{name}@{version}");
    let mut command = Command::new(program);
    command
        .args(["info", &spec])
        .current_dir(std::env::temp_dir());
    if let Some(registry) = registry {
        command.args(["--registry", registry]);
    }
    let output = command
        .output()
        .with_context(|| format!("could not run cargo info {spec}"))?;
    classify_info(
        &spec,
        output.status.success(),
        &String::from_utf8_lossy(&output.stderr),
    )
}

/// Reads `cargo info`'s answer: success means the version exists; "could
/// not find" means it does not; anything else (no network, an unknown
/// registry) is an error, never taken as "not published".
fn classify_info(spec: &str, success: bool, stderr: &str) -> Result<bool> {
    if success {
        return Ok(true);
    }
    if stderr.contains("could not find") {
        return Ok(false);
    }
    bail!(
        "could not ask the registry whether it has {spec}: {}",
        stderr.trim()
    )
}

/// Unit tests for the plan and the registry answer.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::fixture::Fixture;

    /// Crates the registry has are skipped; the rest are published in
    /// dependency order; the registry is asked about each crate once.
    #[test]
    fn plan_skips_versions_the_registry_has() {
        let fixture = Fixture::new();
        assert_ne!(fixture.root(), workspace_root());
        let workspace = Workspace::load(fixture.root()).unwrap();
        let mut asked = Vec::new();
        let steps = plan(&workspace, |name, version| {
            asked.push(format!("{name}@{version}"));
            Ok(name == "fx-core")
        })
        .unwrap();
        let version = Version::new(0, 1, 0);
        assert_eq!(
            steps,
            [
                Step {
                    name: "fx-core".into(),
                    version: version.clone(),
                    action: Action::Skip
                },
                Step {
                    name: "fx-app".into(),
                    version,
                    action: Action::Publish
                },
            ]
        );
        assert_eq!(asked, ["fx-core@0.1.0", "fx-app@0.1.0"]);
        let unique: BTreeSet<_> = asked.iter().collect();
        assert_eq!(unique.len(), asked.len());
    }

    /// A registry that cannot be asked stops the plan.
    #[test]
    fn plan_stops_when_the_registry_cannot_be_asked() {
        let fixture = Fixture::new();
        let workspace = Workspace::load(fixture.root()).unwrap();
        let err = plan(&workspace, |_, _| bail!("no network")).unwrap_err();
        assert!(err.to_string().contains("no network"), "{err:#}");
    }

    /// cargo info's answers: found, not found, and failures that must not
    /// read as "not published".
    #[test]
    fn reads_cargo_info_answers() {
        assert!(classify_info("a@1.0.0", true, "").unwrap());
        assert!(
            !classify_info(
                "a@1.0.0",
                false,
                "error: could not find `a@1.0.0` in registry `crates-io`"
            )
            .unwrap()
        );
        let err = classify_info(
            "a@1.0.0",
            false,
            "error: failed to get successful HTTP response",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("could not ask the registry"),
            "{err}"
        );
    }

    /// Options and their mistakes.
    #[test]
    fn parses_options() {
        let parse_args = |args: &[&str]| parse(args.iter().map(|arg| (*arg).to_owned()));
        assert_eq!(parse_args(&[]).unwrap(), Options::default());
        assert_eq!(
            parse_args(&["--dry-run", "--registry", "local"]).unwrap(),
            Options {
                dry_run: true,
                registry: Some("local".into())
            }
        );
        assert!(parse_args(&["--registry"]).is_err());
        assert!(parse_args(&["--registry", "--dry-run"]).is_err());
        assert!(parse_args(&["--force"]).is_err());
    }
}
