//! Test helpers: store directories in the system temp dir, removed when the test is done.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dcb::{AppendRequest, EventStore, EventStream, Query, ReadOptions, ReadResponse, Result};
use dcb_file::FileStore;

/// A unique directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("dcb-file-{name}-{}-{unique}-{nanos}", std::process::id()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file store in its own temp directory, which goes away with the last handle.
#[derive(Clone)]
pub struct TempStore {
    store: FileStore,
    _dir: Arc<TempDir>,
}

impl TempStore {
    pub fn new() -> TempStore {
        let dir = TempDir::new("conformance");
        let store = FileStore::open(dir.path()).expect("open a fresh store");
        TempStore { store, _dir: Arc::new(dir) }
    }
}

impl EventStore for TempStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        self.store.read(query, options).await
    }

    async fn append_request(&self, request: AppendRequest) -> Result<u64> {
        self.store.append_request(request).await
    }

    async fn head(&self) -> Result<Option<u64>> {
        self.store.head().await
    }

    async fn tracking_position(&self, source: &str) -> Result<Option<u64>> {
        self.store.tracking_position(source).await
    }

    async fn subscribe(&self, query: Query, after: Option<u64>) -> Result<EventStream> {
        self.store.subscribe(query, after).await
    }
}
