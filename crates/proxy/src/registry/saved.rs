//! Registrations made through the API, kept in `<--data-dir>/services/`
//! (one `<id>.json` each, in the schema they were written in) so that a
//! restarted proxy registers them again. `--service-config-dir` is the
//! operator's and is read again anyway; a saved registration with the same
//! id replaces its file's at start, as it did when it was made.
//!
//! Every function here does file I/O: call them off the runtime
//! (`spawn_blocking`).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Service;

pub(crate) struct Saved {
    dir: PathBuf,
}

impl Saved {
    pub(crate) fn new(data_dir: &Path) -> Saved {
        Saved { dir: data_dir.join("services") }
    }

    /// `<id>.json`, the id's bytes outside `[A-Za-z0-9._-]` as `%XX`, so
    /// any id is one plain file name.
    fn path(&self, id: &str) -> PathBuf {
        let mut name = String::with_capacity(id.len() + 5);
        for byte in id.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => name.push(byte as char),
                _ => name.push_str(&format!("%{byte:02X}")),
            }
        }
        name.push_str(".json");
        self.dir.join(name)
    }

    /// Every saved registration, in file name order. A file that cannot be
    /// read or parsed is skipped, logged: one bad file does not cost the
    /// others their registration.
    pub(crate) fn load(&self) -> Vec<Service> {
        let Ok(paths) = super::spec::json_files(&self.dir) else { return Vec::new() };
        let mut services = Vec::new();
        for path in paths {
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| Service::parse(&text).map_err(|e| e.to_string()))
            {
                Ok(service) => services.push(service),
                Err(err) => tracing::warn!(file = %path.display(), %err, "saved service registration skipped"),
            }
        }
        services
    }

    /// Writes the registration durably: a temporary file, synced, renamed
    /// over the old one, the folder synced.
    pub(crate) fn save(&self, service: &Service) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&service.id);
        let temporary = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(service.to_json().to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Forgets a registration; one never saved is no error.
    pub(crate) fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => std::fs::File::open(&self.dir)?.sync_all(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_registrations_come_back_and_removed_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("keel-proxy-saved-{}", std::process::id()));
        let saved = Saved::new(&dir);
        assert!(saved.load().is_empty(), "no folder yet: nothing saved");
        let parse = |json: &str| Service::parse(json.as_bytes()).unwrap();
        let web = parse(r#"{"name":"web","id":"web 1","address":"h:1","check":{"ttl":"5s"}}"#);
        let db = parse(r#"{"name":"db","address":"h:2","tags":["a"],"check":{"tcp":"h:2","interval":"1s"}}"#);
        saved.save(&web).unwrap();
        saved.save(&db).unwrap();
        assert_eq!(saved.load(), [db.clone(), web.clone()]);
        std::fs::write(dir.join("services/broken.json"), "{").unwrap();
        assert_eq!(saved.load().len(), 2, "a broken file is skipped");
        saved.remove(&web.id).unwrap();
        saved.remove("never-saved").unwrap();
        assert_eq!(saved.load(), [db]);
        assert!(saved.path("a b%/c").ends_with("a%20b%25%2Fc.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
