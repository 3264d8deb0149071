//! Finding what the benchmark uses but does not build: `pgbench` and a
//! TrueType font for the charts. A path given on the command line (or in
//! its environment variable) wins; otherwise the usual places are searched.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// `pgbench`: `given`, else on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin/pgbench` (Debian and Ubuntu install
/// it there without putting it on `PATH`).
pub(crate) fn pgbench(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("pgbench not found at {}", path.display());
        }
        return Ok(path.to_owned());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbench"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = on_path {
        return Ok(path);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let binary = entry.path().join("bin/pgbench");
            binary.is_file().then_some((version, binary))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, binary)) => Ok(binary),
        None => bail!(
            "pgbench not found on PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL's client tools, or pass --pgbench (PGBENCH)"
        ),
    }
}

/// Where distributions put a sans-serif TrueType font, in order of
/// preference: DejaVu Sans (Debian, Ubuntu, Arch, Fedora), Liberation Sans,
/// then Arial on macOS.
const FONTS: [&str; 7] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// A sans-serif TrueType font: `given`, else the first of [`FONTS`] found.
pub(crate) fn font(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("font not found at {}", path.display());
        }
        return Ok(path.to_owned());
    }
    match FONTS.iter().map(PathBuf::from).find(|path| path.is_file()) {
        Some(path) => Ok(path),
        None => bail!(
            "no font found for the charts (looked for {}): install one (Debian: fonts-dejavu-core), or pass --font (BENCHMARK_FONT)",
            FONTS.join(", ")
        ),
    }
}
