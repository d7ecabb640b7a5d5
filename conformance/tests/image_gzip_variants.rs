//! skiff-image gzip layers beyond the plain single-member case: multi-member gzip (as `pigz` or
//! concatenation make), a trailer whose size field lies (small, hiding a decompression bomb; or
//! wrong, on real data). The size limit counts the real output, never the trailer's claim.

mod image_support;

use image_support::*;

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn unpack(
    store: &std::path::Path,
    layout: &std::path::Path,
    b: &std::path::Path,
    mode: &str,
    extra: &[&str],
) -> std::process::Output {
    let r = format!("oci:{}:latest", layout.display());
    let mut args = vec!["unpack", &r, b.to_str().unwrap_or_default(), "--mode", mode];
    args.extend_from_slice(extra);
    si(store, &args)
}

/// A one-layer layout in `t/layout` whose gzip layer of `tar` has its trailer's size field
/// (ISIZE) replaced by `isize(real size)`; the diff_id stays the real one.
fn layout_with_isize(
    t: &TestDir,
    tar: &[u8],
    isize: impl FnOnce(u32) -> u32,
) -> std::path::PathBuf {
    let mut gz = gzip(tar);
    let n = gz.len();
    let real = u32::from_le_bytes([gz[n - 4], gz[n - 3], gz[n - 2], gz[n - 1]]);
    gz[n - 4..].copy_from_slice(&isize(real).to_le_bytes());
    let layout = t.join("layout");
    make_layout(
        &layout,
        &[(gz, GZ, format!("sha256:{}", sha256_hex(tar)))],
        serde_json::json!({}),
    );
    layout
}

fn big_layer() -> Vec<u8> {
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    Layer::new()
        .dir("d", 0o755)
        .file("d/big", 0o644, &data)
        .file("d/small", 0o600, b"small")
        .finish()
}

#[test]
fn multi_member_gzip_layer_unpacks_in_both_modes() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgz-multi");
    let tar = big_layer();
    let half = tar.len() / 2;
    let mut gz = gzip(&tar[..half]);
    gz.extend_from_slice(&gzip(&tar[half..]));
    let layout = t.join("layout");
    make_layout(
        &layout,
        &[(gz, GZ, format!("sha256:{}", sha256_hex(&tar)))],
        serde_json::json!({}),
    );
    let store = t.join("store");
    let want = tar::Archive::new(&tar[..])
        .entries()
        .expect("entries")
        .filter_map(|e| e.ok())
        .count();
    assert!(want >= 3);
    for mode in ["copy", "overlay"] {
        let b = t.join(&format!("b-{mode}"));
        ok(
            &unpack(&store, &layout, &b, mode, &[]),
            "unpack multi-member gzip",
        );
        let big = std::fs::read(b.join("rootfs/d/big")).expect("big");
        assert_eq!(big.len(), 3_000_000, "{mode}: size of d/big");
        assert_eq!(
            std::fs::read(b.join("rootfs/d/small")).expect("small"),
            b"small"
        );
        ok(
            &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
    }
}

#[test]
fn gzip_trailer_claiming_a_small_size_does_not_hide_a_bomb() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgz-bomb");
    let zeros = vec![0u8; 32 << 20];
    let tar = Layer::new().file("zeros", 0o644, &zeros).finish();
    // ISIZE says 1000 bytes.
    let layout = layout_with_isize(&t, &tar, |_| 1000);
    let store = t.join("store");
    for mode in ["copy", "overlay"] {
        let b = t.join(&format!("b-{mode}"));
        let o = unpack(&store, &layout, &b, mode, &["--max-layer-size", "10000000"]);
        assert!(
            !o.status.success(),
            "{mode}: bomb with a lying trailer accepted"
        );
        assert!(
            stderr(&o).contains("size limit"),
            "{mode}: unclear: {}",
            stderr(&o)
        );
        assert!(!b.exists(), "{mode}: bundle left behind");
    }
}

#[test]
fn gzip_trailer_with_a_wrong_size_is_refused() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgz-isize");
    let tar = big_layer();
    let layout = layout_with_isize(&t, &tar, |real| real + 4096);
    let store = t.join("store");
    for mode in ["copy", "overlay"] {
        let b = t.join(&format!("b-{mode}"));
        let o = unpack(&store, &layout, &b, mode, &[]);
        assert!(!o.status.success(), "{mode}: corrupt gzip trailer accepted");
        eprintln!("{mode}: {}", stderr(&o).trim());
        assert!(
            stderr(&o).contains("layer sha256:"),
            "{mode}: error names no layer: {}",
            stderr(&o)
        );
        assert!(!b.exists(), "{mode}: bundle left behind");
    }
}
