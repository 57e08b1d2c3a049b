//! Embeds the browser assets (demo app, operator dashboard, browser SDK) in
//! the binary: writes `$OUT_DIR/web_assets.rs`, a table of
//! `(url path, content type, include_bytes!(file))` over `web/dist/` and
//! `sdk/js/dist/switchboard.js`. Missing directories (a fresh checkout where
//! npm has not run) give an empty table; the server then serves a page that
//! says how to build them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("../..");
    let web_dist = root.join("web/dist");
    let sdk_dist = root.join("sdk/js/dist");
    // Directories: cargo rescans them for changes; also rerun when they appear.
    println!("cargo:rerun-if-changed={}", web_dist.display());
    println!("cargo:rerun-if-changed={}", sdk_dist.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut web = Vec::new();
    walk(&web_dist, &mut web);
    for path in web {
        let rel = path.strip_prefix(&web_dist).expect("under dist");
        let url = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        files.push((url, path));
    }
    for name in ["switchboard.js", "switchboard.js.map"] {
        let path = sdk_dist.join(name);
        if path.is_file() {
            files.push((format!("/sdk/{name}"), path));
        }
    }

    let mut code = String::from(
        "/// Embedded assets: (url path, content type, bytes).\n\
         pub static ASSETS: &[(&str, &str, &[u8])] = &[\n",
    );
    for (url, path) in &files {
        let abs = path.canonicalize().expect("existing file");
        writeln!(
            code,
            "    ({url:?}, {:?}, include_bytes!({:?})),",
            content_type(path),
            abs.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    std::fs::write(out, code).expect("writing web_assets.rs");
}
