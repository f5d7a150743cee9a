//! No input makes config loading panic: the shipped example, cut and mutated at random, is
//! either accepted or rejected with problems that each name a reason.

use std::path::Path;

#[test]
fn mutated_configs_never_panic() {
    let example = include_str!("../../deploy/holdfast.toml");
    let origin = Path::new("mutated.toml");
    assert!(holdfast_config::from_toml_str(example, origin).is_ok());
    let mut rng = fastrand::Rng::with_seed(0x401d_fa57);
    let bytes = example.as_bytes();
    let alphabet = b"[]{}=\"',.:0123456789abcxyz \n#-_\\";
    for _ in 0..3000 {
        let mut text = bytes.to_vec();
        for _ in 0..rng.usize(1..6) {
            if text.is_empty() {
                break;
            }
            let at = rng.usize(..text.len());
            match rng.u8(..3) {
                0 => text[at] = alphabet[rng.usize(..alphabet.len())],
                1 => {
                    text.remove(at);
                }
                _ => text.truncate(at.max(1)),
            }
        }
        let text = String::from_utf8_lossy(&text);
        if let Err(e) = holdfast_config::from_toml_str(&text, origin) {
            assert!(!e.problems.is_empty());
            assert!(e.problems.iter().all(|p| !p.reason.is_empty()), "{e}");
        }
    }
}
