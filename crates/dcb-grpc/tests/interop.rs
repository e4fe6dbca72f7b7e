//! Interoperability with a client nobody here wrote: the `umadb` Python package from PyPI runs
//! `tests/interop/umadb_client.py` against the `dcb-server` binary, once over plain HTTP and once
//! over TLS with an API key (the Python client sends a key only over TLS).
//!
//! The first run creates a virtualenv under `target/interop-venv` (`python3 -m venv`) and
//! installs the pinned `umadb` version into it, which needs `python3` and access to PyPI; later
//! runs reuse it. `DCB_SKIP_INTEROP=1` skips the test on machines without either.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ServerProcess, run};

/// The version the script was written against.
const UMADB: &str = "umadb==0.7.8";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of the build that made the server binary.
fn target_dir() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_dcb-server"));
    server.parent().and_then(Path::parent).expect("the binary lies in target/<profile>/").to_path_buf()
}

/// The virtualenv's python, with `umadb` installed.
fn python() -> PathBuf {
    let venv = target_dir().join("interop-venv");
    let python = venv.join("bin").join("python");
    let installed = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('umadb'))"])
        .output()
        .is_ok_and(|out| {
            let version = String::from_utf8_lossy(&out.stdout);
            out.status.success() && UMADB.strip_prefix("umadb==") == Some(version.trim())
        });
    if !installed {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", UMADB]));
    }
    python
}

fn run_script(python: &Path, args: &[&str]) {
    let script = manifest_dir().join("tests/interop/umadb_client.py");
    let output = Command::new(python).arg(&script).args(args).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("interop OK"),
        "the umadb client failed against dcb-server:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_umadb_python_client_works_against_dcb_server() {
    if std::env::var_os("DCB_SKIP_INTEROP").is_some() {
        eprintln!("DCB_SKIP_INTEROP is set: skipping the umadb interop test");
        return;
    }
    let python = python();

    let plain = ServerProcess::start(&["--listen", "127.0.0.1:0", "--store", "mem"]);
    run_script(&python, &[&format!("http://{}", plain.address)]);
    plain.terminate();

    let certs = manifest_dir().join("tests/interop/certs");
    let (cert, key, ca) = (certs.join("server.pem"), certs.join("server.key"), certs.join("ca.pem"));
    let secured = ServerProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--store",
        "mem",
        "--api-key",
        "interop-key",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = secured.address.rsplit(':').next().unwrap();
    run_script(&python, &[&format!("https://localhost:{port}"), "interop-key", ca.to_str().unwrap()]);
    secured.terminate();
}
