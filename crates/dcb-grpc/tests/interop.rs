//! Interoperability with clients nobody here wrote, against the `dcb-server` binary:
//!
//! - the `umadb` Python package from PyPI runs `tests/interop/umadb_client.py`, once over plain
//!   HTTP and once over TLS with an API key (the Python client sends a key only over TLS);
//! - the Python `eventsourcing` library, through its UmaDB persistence module
//!   (`eventsourcing-umadb`), runs its own recorder test cases and two small applications
//!   (`tests/interop/eventsourcing_library.py`), each test against a fresh server.
//!
//! The first run creates a virtualenv under `target/interop-venv` (`python3 -m venv`) and
//! installs the pinned packages into it, which needs `python3` and access to PyPI; later runs
//! reuse it. `DCB_SKIP_INTEROP=1` skips the tests on machines without either.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ServerProcess, run};

/// The versions the scripts were written against (the library's extras pinned too).
const PACKAGES: [&str; 7] = [
    "umadb==0.7.8",
    "eventsourcing==10.0.0a7",
    "eventsourcing-umadb==0.4.4",
    "pydantic==2.14.4",
    "msgspec==0.22.0",
    "pycryptodome==4.4.0",
    "typing_extensions==4.16.0",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of the build that made the server binary.
fn target_dir() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_dcb-server"));
    server.parent().and_then(Path::parent).expect("the binary lies in target/<profile>/").to_path_buf()
}

/// The virtualenv's python, with [`PACKAGES`] installed: made once per run of this binary (its
/// tests run at once, and two `python3 -m venv` of one directory fail).
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let venv = target_dir().join("interop-venv");
    let python = venv.join("bin").join("python");
    let check = "import importlib.metadata as m, sys\n\
                 sys.exit(any(m.version(n) != v for n, v in (p.split('==') for p in sys.argv[1:])))";
    let installed =
        Command::new(&python).args(["-c", check]).args(PACKAGES).status().is_ok_and(|s| s.success());
    if !installed {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(PACKAGES));
    }
    python
}

/// Runs `tests/interop/SCRIPT` with `args`, which must print `success`.
fn run_script(python: &Path, script: &str, args: &[&str], success: &str) {
    let script = manifest_dir().join("tests/interop").join(script);
    let output = Command::new(python).arg(&script).args(args).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(success),
        "{} failed against dcb-server:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn skipped() -> bool {
    let skip = std::env::var_os("DCB_SKIP_INTEROP").is_some();
    if skip {
        eprintln!("DCB_SKIP_INTEROP is set: skipping the interop test");
    }
    skip
}

#[test]
fn the_umadb_python_client_works_against_dcb_server() {
    if skipped() {
        return;
    }
    let python = python();

    let plain = ServerProcess::start(&["--listen", "127.0.0.1:0", "--store", "mem"]);
    run_script(&python, "umadb_client.py", &[&format!("http://{}", plain.address)], "interop OK");
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
    let args = [&format!("https://localhost:{port}"), "interop-key", ca.to_str().unwrap()];
    run_script(&python, "umadb_client.py", &args, "interop OK");
    secured.terminate();
}

#[test]
fn the_python_eventsourcing_library_passes_its_recorder_tests_against_dcb_server() {
    if skipped() {
        return;
    }
    let python = python();
    let server = env!("CARGO_BIN_EXE_dcb-server");
    run_script(&python, "eventsourcing_library.py", &[server], "eventsourcing interop OK");
}
