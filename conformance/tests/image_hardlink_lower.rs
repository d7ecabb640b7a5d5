//! skiff-image: hardlinks to files of a LOWER layer. Overlay mode copies the target up from the
//! nearest lower layer that shows it (whiteouts and opaque dirs in between honoured) into the
//! new layer and links to the copy, so the overlay view equals copy mode's tree and umoci's.
//! Targets through lower-layer symlinks resolve inside the image root in both modes. Hostile
//! variants (symlink loops, symlinks planted by the same layer, `..`, whited out, behind an
//! opaque dir) must fail clearly or give the right result, and never reach outside the bundle.

mod image_support;

use image_support::*;
use std::path::Path;
use tar::EntryType;

/// Copy mode, overlay mode (cold and cached) and umoci must all give the same tree.
fn agree(name: &str, tars: Vec<Vec<u8>>, with_umoci: bool) {
    compare_unpackers(&format!("imghl-{name}"), tars, true, with_umoci);
}

/// Every mode must refuse the image with an error mentioning one of `expect` (per mode), leave
/// no bundle and no partial cached layer, and write nothing outside the store.
fn refused(name: &str, tars: Vec<Vec<u8>>, expect: &[(&str, &str)]) {
    assert_refused("imghl", name, &tars, expect);
}

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("usr", 0o755)
        .dir_owned("usr/bin", 0o750, 12, 34)
        .file_owned("usr/bin/tool", 0o4755, 1, 2, b"the tool's bytes")
        .file("usr/bin/other", 0o644, b"other")
        .dir("d", 0o755)
        .file("d/f", 0o600, b"in d")
        .symlink("s", "usr/bin")
        .symlink("escape", "/etc")
        .finish()
}

#[test]
fn hardlink_to_lower_layer_file() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .dir("opt", 0o755)
            .hardlink("opt/tool-link", "usr/bin/tool")
            // A second link to the same lower file joins the same group.
            .hardlink("opt/tool-link2", "usr/bin/tool")
            .finish(),
    ];
    agree("basic", tars, true);
}

#[test]
fn hardlink_to_lower_file_in_a_deep_directory_the_layer_lacks() {
    // The new layer has no entry for usr/ or usr/bin/: the copy-up must recreate them with the
    // lower layer's owner and mode (0750 12:34), or the merged view would change them.
    let tars = vec![
        base_layer(),
        Layer::new()
            .hardlink("tool-at-root", "usr/bin/tool")
            .finish(),
    ];
    agree("deep", tars, true);
}

#[test]
fn hardlink_to_lower_file_then_whiteout_of_the_target() {
    // The link keeps the content; the original name is gone.
    let tars = vec![
        base_layer(),
        Layer::new()
            .hardlink("keep", "usr/bin/other")
            .whiteout("usr/bin", "other")
            .finish(),
    ];
    agree("then-whiteout", tars, true);
}

#[test]
fn hardlink_to_lower_file_then_opaque_parent() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .hardlink("keep", "d/f")
            .file("d/new", 0o644, b"new")
            .opaque("d")
            .finish(),
    ];
    agree("then-opaque", tars, true);
}

#[test]
fn hardlink_to_file_two_layers_down_across_a_middle_layer() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .dir("usr", 0o755)
            .dir_owned("usr/bin", 0o711, 5, 6)
            .file("usr/bin/middle", 0o644, b"middle")
            .finish(),
        Layer::new()
            .hardlink("a", "usr/bin/tool")
            .hardlink("b", "usr/bin/middle")
            .finish(),
    ];
    agree("across-middle", tars, true);
}

#[test]
fn hardlink_to_lower_file_that_a_middle_layer_whited_out() {
    let tars = vec![
        base_layer(),
        Layer::new().whiteout("usr/bin", "tool").finish(),
        Layer::new().hardlink("l", "usr/bin/tool").finish(),
    ];
    refused(
        "whited-out",
        tars,
        &[("copy", "does not exist"), ("overlay", "whiteout")],
    );
}

#[test]
fn hardlink_to_lower_file_hidden_by_an_opaque_dir() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .dir("d", 0o755)
            .opaque("d")
            .file("d/other", 0o644, b"o")
            .finish(),
        Layer::new().hardlink("l", "d/f").finish(),
    ];
    refused(
        "opaque-hidden",
        tars,
        &[("copy", "does not exist"), ("overlay", "does not exist")],
    );
}

#[test]
fn hardlink_to_lower_file_whited_out_earlier_in_the_same_layer() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .whiteout("usr/bin", "tool")
            .hardlink("l", "usr/bin/tool")
            .finish(),
    ];
    refused(
        "same-layer-whiteout",
        tars,
        &[("copy", "does not exist"), ("overlay", "whiteout")],
    );
}

#[test]
fn hardlink_to_lower_file_through_a_lower_symlink() {
    // s -> usr/bin (lower layer): copy mode and umoci resolve it inside the rootfs; overlay
    // mode resolves it in the merged view of the layers and copies usr/bin/tool up.
    let tars = vec![base_layer(), Layer::new().hardlink("l", "s/tool").finish()];
    agree("through-symlink", tars, true);
}

#[test]
fn hardlink_through_lower_symlinks_with_dotdot_and_absolute_targets() {
    // up -> ../../../usr (climbs above the root: clamped there), abs -> /usr/bin (absolute:
    // the image root, never the host's), chain -> abs.
    let tars = vec![
        base_layer(),
        Layer::new()
            .dir("x", 0o755)
            .symlink("x/up", "../../../usr")
            .symlink("abs", "/usr/bin")
            .symlink("chain", "abs")
            .finish(),
        Layer::new()
            .hardlink("l1", "x/up/bin/tool")
            .hardlink("l2", "abs/other")
            .hardlink("l3", "chain/tool")
            .finish(),
    ];
    agree("symlink-dotdot-abs", tars, true);
}

#[test]
fn hardlink_through_a_lower_symlink_to_a_file_of_the_same_layer() {
    // The link names the new file through the lower symlink s -> usr/bin: it must join the
    // new file's group, not copy up anything.
    let tars = vec![
        base_layer(),
        Layer::new()
            .dir("usr", 0o755)
            .dir_owned("usr/bin", 0o750, 12, 34)
            .file("usr/bin/new", 0o644, b"new in the top layer")
            .hardlink("l", "s/new")
            .finish(),
    ];
    agree("symlink-to-same-layer", tars, true);
}

#[test]
fn hardlink_through_a_lower_symlink_loop_is_refused() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .symlink("loop1", "loop2")
            .symlink("loop2", "loop1")
            .finish(),
        Layer::new().hardlink("l", "loop1/tool").finish(),
    ];
    refused(
        "symlink-loop",
        tars,
        &[("copy", "symbolic links"), ("overlay", "too many symlinks")],
    );
}

#[test]
fn hardlink_through_a_symlink_of_the_same_layer_is_refused() {
    // A symlink the layer itself planted is never resolved (CVE-2018-15664 style), in either mode.
    let tars = vec![
        base_layer(),
        Layer::new()
            .symlink("mine", "usr/bin")
            .hardlink("l", "mine/tool")
            .finish(),
    ];
    refused(
        "planted-symlink",
        tars,
        &[("copy", "symlink"), ("overlay", "symlink")],
    );
}

#[test]
fn hardlink_through_lower_symlink_to_host_is_refused() {
    // escape -> /etc resolves to the image's own /etc, which it lacks: the host's /etc/passwd
    // is never linked.
    let tars = vec![
        base_layer(),
        Layer::new().hardlink("pw", "escape/passwd").finish(),
    ];
    refused(
        "escape-symlink",
        tars,
        &[("copy", "does not exist"), ("overlay", "does not exist")],
    );
}

#[test]
fn hardlink_to_lower_layer_via_dotdot_is_refused() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .raw(b"l", EntryType::Link, Some(b"usr/../../etc/passwd"), b"")
            .finish(),
    ];
    refused(
        "dotdot",
        tars,
        &[("copy", "outside"), ("overlay", "outside")],
    );
}

#[test]
fn hardlink_to_lower_directory_is_refused() {
    let tars = vec![
        base_layer(),
        Layer::new()
            .raw(b"l", EntryType::Link, Some(b"usr/bin"), b"")
            .finish(),
    ];
    refused(
        "to-dir",
        tars,
        &[("copy", "directory"), ("overlay", "directory")],
    );
}

#[test]
fn shared_upper_layer_over_different_lowers_gets_each_stack_own_copy() {
    // The same second layer (same diff_id) over two different first layers: its cached copy-up
    // depends on the stack below, so it must be cached per chain, not per diff_id.
    if !conformance::is_root() {
        eprintln!("SKIP: shared-upper: needs root");
        return;
    }
    let t = TestDir::new("imghl-shared");
    let store = t.join("store");
    let upper = Layer::new().hardlink("l", "f").finish();
    for content in [&b"first stack"[..], &b"second stack"[..]] {
        let tag = content.len();
        let layout = t.join(&format!("layout{tag}"));
        layout_from_tars(
            &layout,
            &[
                Layer::new().file("f", 0o644, content).finish(),
                upper.clone(),
            ],
        );
        let b = t.join(&format!("b{tag}"));
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    &format!("oci:{}:latest", layout.display()),
                    b.to_str().unwrap_or_default(),
                    "--mode",
                    "overlay",
                ],
            ),
            "unpack overlay",
        );
        let got = std::fs::read(b.join("rootfs/l")).expect("read link");
        ok(
            &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
        assert_eq!(got, content, "hardlink content of stack {tag}");
    }
    assert!(Path::new(&store.join("layers")).exists());
}
