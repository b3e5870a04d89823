#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Resolving a Hugging Face repo id offline from a fabricated HF cache.
//! One test function only: it changes process environment variables.
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

use lingua_encoder::Arch;
use lingua_encoder::ModelFiles;
use lingua_encoder::random::RandomSpec;

#[test]
fn offline_resolution_uses_the_hf_cache_layout() {
    let home = tempfile::tempdir().unwrap();
    let repo = home
        .path()
        .join("hub/models--microsoft--llmlingua-2-bert-base-multilingual-cased-meetingbank");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    RandomSpec::tiny(Arch::Bert, 1).write(&snap, None).unwrap();
    std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();

    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe {
        std::env::remove_var("HF_HUB_CACHE");
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let f = ModelFiles::resolve("microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")
        .unwrap();
    assert_eq!(f.dir, snap);
    assert_eq!(f.weights, snap.join("model.safetensors"));

    // Not in the cache, offline: a clear error naming the variable and the cache path.
    let e = ModelFiles::resolve("microsoft/llmlingua-2-xlm-roberta-large-meetingbank")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
    assert!(
        e.contains("models--microsoft--llmlingua-2-xlm-roberta-large-meetingbank"),
        "{e}"
    );
    assert!(e.contains(&home.path().display().to_string()), "{e}");

    // Without refs/main the newest snapshot is used.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let f = ModelFiles::resolve("microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")
        .unwrap();
    assert_eq!(f.dir, snap);

    // A snapshot missing its weights does not count as cached.
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let e = ModelFiles::resolve("microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");

    // HF_HUB_CACHE wins over HF_HOME.
    let other = tempfile::tempdir().unwrap();
    let snap2 = other.path().join("models--org--name/snapshots/abc");
    RandomSpec::tiny(Arch::Bert, 1).write(&snap2, None).unwrap();
    std::fs::write(snap2.join("tokenizer.json"), "{}").unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var("HF_HUB_CACHE", other.path()) };
    assert_eq!(ModelFiles::resolve("org/name").unwrap().dir, snap2);
}
