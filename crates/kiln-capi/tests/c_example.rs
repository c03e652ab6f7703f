//! The C API from C: the committed header is current, and `tests/c/classify.c` compiles against it, links
//! the static library, and runs clean under valgrind (no errors, no leaks); and `tools/install-c.sh` installs
//! files the example builds from through pkg-config.

use std::path::PathBuf;
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn header_is_current() {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir())
        .with_config(config)
        .generate()
        .expect("cbindgen runs")
        .write(&mut generated);
    let path = crate_dir().join("include/kiln.h");
    if std::env::var_os("KILN_REGENERATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/kiln.h is stale: run KILN_REGENERATE_HEADER=1 cargo test -p kiln-capi --test c_example header_is_current"
    );
}

/// `target/<profile>`, where cargo put this package's libraries (the test binary lives in its `deps/`).
fn profile_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

fn has(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn c_program_runs_clean_under_valgrind() {
    // The static library of this package, built (or brought up to date: one left by an earlier build would
    // lack newer functions) every time, since cargo builds only rlibs for tests.
    let lib = profile_dir().join("libkiln.a");
    let release = profile_dir().ends_with("release");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "-p", "kiln-capi"]);
    if release {
        cargo.arg("--release");
    }
    assert!(cargo.status().unwrap().success(), "building the static library");
    assert!(lib.exists(), "{} missing", lib.display());
    let out_dir = std::env::temp_dir().join(format!("kiln-capi-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join("classify");
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(&exe)
        .arg(crate_dir().join("tests/c/classify.c"))
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .status()
        .expect("cc runs");
    assert!(status.success(), "compiling tests/c/classify.c");

    let model = crate_dir().join("../kiln-core/fuzz/seeds/from_bytes/int8.kiln");
    let plain = Command::new(&exe).arg(&model).output().unwrap();
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&plain.stderr));
    assert!(stdout.contains("all checks passed"), "{stdout}");

    assert!(has("valgrind"), "valgrind is not installed (apt-get install valgrind; .ci/run does)");
    let run = Command::new("valgrind")
        .args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", "--quiet"])
        .arg(&exe)
        .arg(&model)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "valgrind found problems:\n{report}");
    std::fs::remove_dir_all(&out_dir).ok();
}

/// `tools/install-c.sh PREFIX` installs the libraries, the header and `kiln.pc`; the C example then builds
/// from the installed files alone, through pkg-config, against the shared library and the static one.
#[test]
fn installed_library_builds_through_pkg_config() {
    assert!(has("pkg-config"), "pkg-config is not installed (apt-get install pkgconf; .ci/run does)");
    let prefix = std::env::temp_dir().join(format!("kiln-install-{}", std::process::id()));
    std::fs::remove_dir_all(&prefix).ok();
    let install = Command::new("bash").arg(crate_dir().join("../../tools/install-c.sh")).arg(&prefix).output().unwrap();
    assert!(install.status.success(), "tools/install-c.sh: {}", String::from_utf8_lossy(&install.stderr));
    for file in ["lib/libkiln.a", "lib/libkiln.so", "include/kiln.h", "lib/pkgconfig/kiln.pc"] {
        assert!(prefix.join(file).is_file(), "{file} was not installed");
    }
    // Only the installed copy of the header: the program is compiled from a directory of its own.
    let work = prefix.join("app");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(crate_dir().join("tests/c/classify.c"), work.join("classify.c")).unwrap();
    let pkg_config_path = prefix.join("lib/pkgconfig");
    let build = |script: &str| {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(&work)
            .env("PKG_CONFIG_PATH", &pkg_config_path)
            .env("PREFIX", &prefix)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    build("cc -std=c99 -Wall -Wextra -Werror -o shared classify.c $(pkg-config --cflags --libs kiln)");
    build(
        "cc -std=c99 -Wall -Wextra -Werror -o static classify.c $(pkg-config --cflags kiln) \
         \"$(pkg-config --variable=libdir kiln)/libkiln.a\" $(pkg-config --variable=static_libs kiln)",
    );
    let model = crate_dir().join("../kiln-core/fuzz/seeds/from_bytes/int8.kiln");
    for (exe, library_path) in [("shared", Some(prefix.join("lib"))), ("static", None)] {
        let mut run = Command::new(work.join(exe));
        run.arg(&model);
        match &library_path {
            Some(dir) => run.env("LD_LIBRARY_PATH", dir),
            // The static build must not need the shared library at all.
            None => run.env_remove("LD_LIBRARY_PATH"),
        };
        let out = run.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("all checks passed"), "{exe}: {stdout}");
    }
    // The shared build really loads the installed libkiln.so.
    let needed = Command::new("readelf").args(["-d"]).arg(work.join("shared")).output().unwrap();
    assert!(
        String::from_utf8_lossy(&needed.stdout).contains("libkiln.so"),
        "the shared build does not need libkiln.so"
    );
    let needed = Command::new("readelf").args(["-d"]).arg(work.join("static")).output().unwrap();
    assert!(!String::from_utf8_lossy(&needed.stdout).contains("libkiln"), "the static build needs libkiln.so");
    std::fs::remove_dir_all(&prefix).ok();
}
