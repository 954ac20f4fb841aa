//! Compiled components kept on disk, so a start or a reload does not compile an unchanged
//! component again: an 18 MB Python component takes tens of seconds to compile, and well
//! under one to load compiled.
//!
//! An entry is named by the SHA-256 of the component's bytes and of the engine's
//! compatibility hash (wasmtime's version, target and every compiler and memory setting):
//! a changed component or a differently configured engine looks for another name, so a
//! stale or foreign artifact is never even opened. An entry ends with the SHA-256 of what
//! precedes it, checked before wasmtime reads it (which checks its own header again); one
//! that fails either check is compiled again and replaced. Entries are written to a
//! temporary file and renamed into place, so a reader sees all of one or nothing.
//!
//! A compiled artifact is native code the host runs unsandboxed: the directory must be the
//! host's own (owned by its user, not writable by others), or it is not used at all. Only
//! the host writes entries; nothing outside it (a plugin's author) can supply one.
//!
//! The directory: `SLUICE_COMPILE_CACHE` (`off` turns caching off), else systemd's
//! `$CACHE_DIRECTORY` (`CacheDirectory=`), else `$XDG_CACHE_HOME/sluice`, else
//! `~/.cache/sluice`. Least recently used entries are removed past [`MAX_BYTES`].

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What the entries may take on disk together; the oldest go first past it.
pub const MAX_BYTES: u64 = 2 << 30;
/// Bumped when the entry format changes.
const FORMAT: &[u8] = b"sluice-compiled-component-1";
const SUFFIX: &str = "cwasm";

/// A directory of compiled components, checked fit for holding native code.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// Where a component came from: compiled now, or read from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Compiled,
    Cached,
}

impl CompileCache {
    /// The directory the environment names (module docs), if caching is not turned off.
    pub fn from_env() -> Option<CompileCache> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = match var("SLUICE_COMPILE_CACHE") {
            Some(v) if v == "off" => return None,
            Some(v) => PathBuf::from(v),
            None => match (var("CACHE_DIRECTORY"), var("XDG_CACHE_HOME"), var("HOME")) {
                // systemd may list several directories, colon-separated.
                (Some(d), _, _) => {
                    PathBuf::from(d.to_string_lossy().split(':').next()?).join("compiled")
                }
                (None, Some(x), _) => PathBuf::from(x).join("sluice/compiled"),
                (None, None, Some(h)) => PathBuf::from(h).join(".cache/sluice/compiled"),
                (None, None, None) => return None,
            },
        };
        match CompileCache::open(&dir) {
            Ok(cache) => Some(cache),
            Err(reason) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "not caching compiled plugins: {reason}; every start compiles them"
                );
                None
            }
        }
    }

    /// Use `dir`, creating it (mode 0700) if missing. Refuses one another user owns or
    /// others may write to: whoever writes there chooses code the host runs.
    pub fn open(dir: &Path) -> Result<CompileCache, String> {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create it: {e}"))?;
        }
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() {
            return Err("it is not a directory".into());
        }
        if meta.uid() != me {
            return Err(format!(
                "it is owned by uid {}, not by this user ({me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "others may write to it (mode {:o}); chmod 700 it",
                meta.mode() & 0o777
            ));
        }
        Ok(CompileCache {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compiled `wasm`, from the cache when an entry of this component for this engine
    /// is there and intact; else compiled and stored.
    pub fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, Source)> {
        let path = self.entry(engine, wasm);
        if let Some(component) = self.read(engine, &path) {
            return Ok((component, Source::Cached));
        }
        let component = Component::from_binary(engine, wasm)?;
        if let Err(e) = self.write(&component, &path) {
            tracing::warn!(path = %path.display(), "could not cache a compiled plugin: {e}");
        }
        Ok((component, Source::Compiled))
    }

    /// The entry's path: the component's and the engine's hash.
    fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = DigestHasher(Sha256::new());
        hasher.0.update(FORMAT);
        hasher.0.update(env!("CARGO_PKG_VERSION"));
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(Sha256::digest(wasm));
        let key = hasher.0.finalize();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.{SUFFIX}"))
    }

    /// An intact entry, deserialized; `None` when missing, damaged or refused by wasmtime.
    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let body = bytes.len().checked_sub(32).map(|n| &bytes[..n]);
        let intact = body.is_some_and(|body| Sha256::digest(body)[..] == bytes[body.len()..]);
        if !intact {
            tracing::warn!(path = %path.display(), "a cached compiled plugin is damaged; compiling again");
            return None;
        }
        // SAFETY: the bytes are what `Component::serialize` wrote in this directory, which
        // only this user can write (checked at `open`), under a name derived from the
        // component and this engine, checksummed; wasmtime checks its version and
        // configuration again.
        match unsafe { Component::deserialize(engine, body?) } {
            Ok(component) => {
                // Recently used: pruning keeps it.
                let _ = std::fs::File::open(path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "a cached compiled plugin was refused ({e:#}); compiling again");
                None
            }
        }
    }

    fn write(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        let mut bytes = component.serialize().map_err(std::io::Error::other)?;
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(&bytes)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp.0);
        })?;
        self.prune(path);
        Ok(())
    }

    /// Remove the least recently used entries past [`MAX_BYTES`], never `keep`.
    fn prune(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == SUFFIX))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= MAX_BYTES {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// A new file in `dir` with a name no other writer uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// Feeds `Hash` into SHA-256: the engine's compatibility hash is the same bytes in every
/// process of one build.
struct DigestHasher(Sha256);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed_wasm() -> Vec<u8> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/fixtures/typed.wasm");
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run dev/build-plugins first", path.display()))
    }

    fn engine(epochs: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(epochs);
        Engine::new(&config).unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == SUFFIX))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn an_unchanged_component_is_compiled_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        let (engine, wasm) = (engine(true), typed_wasm());
        assert_eq!(cache.component(&engine, &wasm).unwrap().1, Source::Compiled);
        assert_eq!(cache.component(&engine, &wasm).unwrap().1, Source::Cached);
        assert_eq!(entries(dir.path()).len(), 1);
        // Another component, or the same for an engine configured otherwise, is another entry.
        let mut changed = wasm.clone();
        changed.extend_from_slice(&[0, 3, 1, b'x', 0]); // a custom section `x`
        assert_eq!(
            cache.component(&engine, &changed).unwrap().1,
            Source::Compiled
        );
        assert_eq!(
            cache.component(&self::engine(false), &wasm).unwrap().1,
            Source::Compiled
        );
        assert_eq!(entries(dir.path()).len(), 3);
    }

    #[test]
    fn a_damaged_entry_is_compiled_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        let (engine, wasm) = (engine(true), typed_wasm());
        cache.component(&engine, &wasm).unwrap();
        let entry = entries(dir.path()).remove(0);
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&entry, &bytes).unwrap();
        assert_eq!(cache.component(&engine, &wasm).unwrap().1, Source::Compiled);
        assert_eq!(cache.component(&engine, &wasm).unwrap().1, Source::Cached);
        // Truncated to less than its checksum.
        std::fs::write(&entry, b"short").unwrap();
        assert_eq!(cache.component(&engine, &wasm).unwrap().1, Source::Compiled);
    }

    #[test]
    fn an_entry_of_another_engine_under_this_ones_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        let wasm = typed_wasm();
        let (ours, foreign) = (engine(true), engine(false));
        cache.component(&foreign, &wasm).unwrap();
        // Intact (its checksum holds), but compiled for an engine without epochs.
        std::fs::rename(entries(dir.path()).remove(0), cache.entry(&ours, &wasm)).unwrap();
        assert_eq!(cache.component(&ours, &wasm).unwrap().1, Source::Compiled);
        assert_eq!(cache.component(&ours, &wasm).unwrap().1, Source::Cached);
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = CompileCache::open(dir.path()).unwrap_err();
        assert!(refused.contains("others may write"), "{refused}");
        let created = dir.path().join("a/b");
        CompileCache::open(&created).unwrap();
        let mode = std::fs::metadata(&created).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
