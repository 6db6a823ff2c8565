//! The embedded store's log replay. A store of a few commits is made once with palisade's
//! own writer; each input damages its log the way disks and crashes do (cut it short, flip
//! bits, overwrite bytes, append or replace bytes) and the store is opened from the damaged
//! files, as `FileStore::open` does after a crash. Then:
//! - opening either succeeds or fails with a corruption or I/O error naming the store's
//!   directory; with no damage it succeeds with every commit;
//! - what it opens holds every commit whose record lies wholly before the first damaged
//!   byte (those were acknowledged), and if it holds exactly those, it is their state;
//! - a store that opened takes a new commit, and opening it again finds that commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use palisade::model::parse::parse_documents;
use palisade::model::{Resource, ResourceKey};
use palisade::store::file::{FileStore, FileStoreOptions};
use palisade::store::{Datastore, Op, Snapshot, StoreError};

/// Never compact: the template must stay one snapshot and one log.
const OPTIONS: FileStoreOptions = FileStoreOptions {
    compact_after_bytes: u64::MAX,
    compact_after_commits: u64::MAX,
};

const LOG: &str = "log.1";

/// The files of a store with a few commits, and what it held after each.
struct Template {
    /// File name and contents, the log included.
    files: Vec<(String, Vec<u8>)>,
    log: Vec<u8>,
    /// The log's length after its header (`ends[0]`) and after each commit.
    ends: Vec<usize>,
    /// The resources after `r` commits, at index `r`.
    states: Vec<BTreeMap<ResourceKey, Resource>>,
}

/// One way to damage the log.
#[derive(Arbitrary, Debug)]
enum Damage {
    CutAt(u16),
    Flip {
        at: u16,
        bits: u8,
    },
    Set {
        at: u16,
        byte: u8,
    },
    Append(Vec<u8>),
    /// Everything after the header replaced.
    ReplaceCommits(Vec<u8>),
}

pub fn check(data: &[u8]) {
    let template = template();
    let mut unstructured = Unstructured::new(data);
    let Ok(damages) = Vec::<Damage>::arbitrary(&mut unstructured) else {
        return;
    };
    let mut log = template.log.clone();
    let mut first_damaged = log.len();
    for damage in damages.iter().take(8) {
        let at = |offset: u16| usize::from(offset) % log.len().max(1);
        match damage {
            Damage::CutAt(offset) => {
                let at = at(*offset);
                log.truncate(at);
                first_damaged = first_damaged.min(at);
            }
            Damage::Flip { at: offset, bits } => {
                let at = at(*offset);
                if let Some(byte) = log.get_mut(at) {
                    *byte ^= bits;
                    if *bits != 0 {
                        first_damaged = first_damaged.min(at);
                    }
                }
            }
            Damage::Set { at: offset, byte } => {
                let at = at(*offset);
                if let Some(old) = log.get_mut(at)
                    && *old != *byte
                {
                    *old = *byte;
                    first_damaged = first_damaged.min(at);
                }
            }
            Damage::Append(bytes) => log.extend_from_slice(bytes),
            Damage::ReplaceCommits(bytes) => {
                let header_end = template.ends[0].min(log.len());
                log.truncate(header_end);
                log.extend_from_slice(bytes);
                first_damaged = first_damaged.min(header_end);
            }
        }
    }
    let intact = template.ends[1..]
        .iter()
        .take_while(|&&end| end <= first_damaged)
        .count();
    let undamaged = log == template.log;

    let dir = scratch_dir();
    for (name, contents) in &template.files {
        let contents = if name == LOG { &log } else { contents };
        write(dir.path(), name, contents);
    }
    let store = match FileStore::open_with_options(dir.path(), OPTIONS) {
        Ok(store) => store,
        Err(err) => {
            assert!(!undamaged, "the undamaged store does not open: {err}");
            refusal_names_the_store(&err, dir.path());
            return;
        }
    };
    let snapshot = match block_on(store.list(None)) {
        Ok(snapshot) => snapshot,
        Err(err) => {
            assert!(!undamaged, "the undamaged store does not list: {err}");
            refusal_names_the_store(&err, dir.path());
            return;
        }
    };
    let revision = usize::try_from(snapshot.revision).unwrap_or(usize::MAX);
    assert!(
        revision >= intact,
        "{intact} commits lie before the first damaged byte ({first_damaged}) but the store \
         opened at revision {revision} ({damages:?})"
    );
    if revision == intact {
        assert_eq!(
            state(&snapshot),
            template.states[intact],
            "the store at revision {revision} is not what it was ({damages:?})"
        );
    }
    if undamaged {
        assert_eq!(revision, template.states.len() - 1);
    }

    let marker = marker();
    let outcome = block_on(store.commit(vec![Op::Apply(marker.clone())])).unwrap_or_else(|err| {
        panic!("the store opened at revision {revision} but takes no commit: {err} ({damages:?})")
    });
    drop(store);
    let reopened = FileStore::open_with_options(dir.path(), OPTIONS).unwrap_or_else(|err| {
        panic!("the store took a commit and does not open again: {err} ({damages:?})")
    });
    let after = block_on(reopened.list(None))
        .unwrap_or_else(|err| panic!("the store took a commit and does not list: {err}"));
    assert_eq!(after.revision, outcome.revision, "({damages:?})");
    assert!(
        after.resources.contains(&marker),
        "the commit after opening is lost ({damages:?})"
    );
}

fn refusal_names_the_store(err: &StoreError, dir: &Path) {
    match err {
        StoreError::Corrupt(message) | StoreError::Unavailable(message) => assert!(
            message.contains(&*dir.to_string_lossy()),
            "the refusal {message:?} does not name the store's directory"
        ),
        other => panic!("opening a damaged store failed with {other:?}"),
    }
}

fn state(snapshot: &Snapshot) -> BTreeMap<ResourceKey, Resource> {
    snapshot
        .resources
        .iter()
        .map(|resource| (resource.key(), resource.clone()))
        .collect()
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(make_template)
}

/// A store of five commits: creates, a replace, a delete, several resources in one.
fn make_template() -> Template {
    let dir = scratch_dir();
    let store = FileStore::open_with_options(dir.path(), OPTIONS).expect("a new store opens");
    let profile = |name: &str, label: &str| {
        resource(&format!(
            "apiVersion: v1\nkind: profile\nmetadata: {{name: {name}, labels: {{role: {label}}}}}\n\
             spec: {{ingress: [{{action: allow, source: {{selector: role == 'app'}}}}]}}\n"
        ))
    };
    let policy = resource(
        "apiVersion: v1\nkind: policy\nmetadata: {name: db}\n\
         spec: {order: 10, selector: role == 'db', ingress: [{action: deny, protocol: tcp, destination: {ports: [22]}}]}\n",
    );
    let endpoint = resource(
        "apiVersion: v1\nkind: workloadEndpoint\n\
         metadata: {name: ep1, node: n1, orchestrator: o, workload: w}\n\
         spec: {interfaceName: cali1, ipNetworks: [10.0.0.1/32], profiles: [db]}\n",
    );
    let commits = vec![
        vec![Op::Apply(profile("db", "db"))],
        vec![Op::Apply(profile("app", "app")), Op::Apply(policy)],
        vec![Op::Apply(endpoint)],
        vec![Op::Replace(profile("db", "database"))],
        vec![Op::Delete {
            key: ResourceKey::Profile { name: "app".into() },
            skip_missing: false,
        }],
    ];
    let log_len = || {
        std::fs::metadata(dir.path().join(LOG))
            .map(|m| m.len() as usize)
            .expect("the log exists")
    };
    let mut ends = vec![log_len()];
    let mut states = vec![BTreeMap::new()];
    for ops in commits {
        block_on(store.commit(ops)).expect("the template's commits apply");
        ends.push(log_len());
        states.push(state(
            &block_on(store.list(None)).expect("the template lists"),
        ));
    }
    drop(store);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("the template's directory lists") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let contents = std::fs::read(entry.path()).expect("the template's files read");
        files.push((name, contents));
    }
    let log = files
        .iter()
        .find(|(name, _)| name == LOG)
        .map(|(_, contents)| contents.clone())
        .expect("the template has a log");
    Template {
        files,
        log,
        ends,
        states,
    }
}

fn marker() -> Resource {
    resource("apiVersion: v1\nkind: profile\nmetadata: {name: after-the-damage}\n")
}

fn resource(yaml: &str) -> Resource {
    let mut resources = parse_documents(yaml).expect("the template's resources parse");
    resources.remove(0)
}

/// A fresh directory in memory where there is one (`/dev/shm`): each input writes and syncs
/// a whole store.
fn scratch_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("palisade-fuzz-store-")
        .tempdir_in(&shm);
    builder
        .or_else(|_| {
            tempfile::Builder::new()
                .prefix("palisade-fuzz-store-")
                .tempdir()
        })
        .expect("a scratch directory")
}

fn write(dir: &Path, name: &str, contents: &[u8]) {
    std::fs::write(dir.join(name), contents)
        .unwrap_or_else(|err| panic!("cannot write {name}: {err}"));
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}
