use super::*;

const ROW: &[u8] = b"row-1";

/// A value as releases before key ids sealed it: `nonce || ciphertext`, the row id alone
/// as associated data.
fn legacy(key: &[u8; 32], nonce: [u8; NONCE_LEN], plaintext: &[u8], row: &[u8]) -> Vec<u8> {
    let aead = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let payload = Payload {
        msg: plaintext,
        aad: row,
    };
    let sealed = aead.encrypt(Nonce::from_slice(&nonce), payload).unwrap();
    [&nonce[..], &sealed].concat()
}

#[test]
fn seals_and_binds_to_the_row() {
    let cipher = Cipher::new(&[7u8; 32]);
    let sealed = cipher.encrypt(b"secret", ROW);
    assert_eq!(
        cipher.decrypt(&sealed, ROW).as_deref(),
        Some(&b"secret"[..])
    );
    assert!(
        cipher.decrypt(&sealed, b"row-2").is_none(),
        "moved to another row"
    );
    assert!(
        Cipher::new(&[8u8; 32]).decrypt(&sealed, ROW).is_none(),
        "another key"
    );
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(cipher.decrypt(&tampered, ROW).is_none());
}

#[test]
fn new_values_name_their_key() {
    let key = [7u8; 32];
    let sealed = Cipher::new(&key).encrypt(b"secret", ROW);
    assert_eq!(&sealed[..2], &[MAGIC, VERSION]);
    assert_eq!(&sealed[2..HEADER_LEN], &KeyId::of(&key).0);
    assert_eq!(
        sealed.len(),
        HEADER_LEN + NONCE_LEN + b"secret".len() + TAG_LEN
    );
    assert_ne!(KeyId::of(&key), KeyId::of(&[8u8; 32]));
    assert_eq!(KeyId::of(&[0u8; 32]).to_string().len(), 8, "hex");
}

#[test]
fn legacy_values_still_open_with_the_current_or_an_old_key() {
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let before = legacy(&old, [9u8; NONCE_LEN], b"secret", ROW);
    assert_eq!(
        Cipher::new(&old).open(&before, ROW),
        Some((b"secret".to_vec(), Sealed::Legacy))
    );
    let rotated = Cipher::with_old_keys(&new, &[old]);
    assert_eq!(
        rotated.open(&before, ROW),
        Some((b"secret".to_vec(), Sealed::Legacy))
    );
    assert!(
        rotated.decrypt(&before, b"row-2").is_none(),
        "still bound to its row"
    );
    assert!(
        Cipher::new(&new).decrypt(&before, ROW).is_none(),
        "old key gone"
    );
}

#[test]
fn old_keys_open_and_the_current_key_seals() {
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let sealed = Cipher::new(&old).encrypt(b"secret", ROW);
    let rotated = Cipher::with_old_keys(&new, &[[3u8; 32], old]);
    assert_eq!(
        rotated.open(&sealed, ROW),
        Some((b"secret".to_vec(), Sealed::OldKey))
    );
    let Resealed::Rewritten(resealed) = rotated.reseal(&sealed, ROW) else {
        panic!("an old key's value is rewritten");
    };
    assert_eq!(
        rotated.open(&resealed, ROW),
        Some((b"secret".to_vec(), Sealed::Current))
    );
    assert_eq!(rotated.reseal(&resealed, ROW), Resealed::Current);
    assert!(
        Cipher::new(&new).decrypt(&resealed, ROW).is_some(),
        "the old key is no longer needed"
    );
    assert!(Cipher::new(&old).decrypt(&resealed, ROW).is_none());
    assert_eq!(
        rotated.old_key_ids(),
        vec![KeyId::of(&[3u8; 32]), KeyId::of(&old)]
    );
    assert_eq!(
        Cipher::with_old_keys(&new, &[new]).old_key_ids(),
        vec![],
        "the current key listed as old is not kept twice"
    );
}

#[test]
fn wrong_keys_and_garbage_never_open() {
    let cipher = Cipher::with_old_keys(&[2u8; 32], &[[1u8; 32]]);
    let stranger = Cipher::new(&[5u8; 32]);
    assert!(cipher.decrypt(&stranger.encrypt(b"x", ROW), ROW).is_none());
    assert!(
        cipher
            .decrypt(&legacy(&[5u8; 32], [0u8; NONCE_LEN], b"x", ROW), ROW)
            .is_none()
    );
    for garbage in [
        &b""[..],
        &[MAGIC],
        &[MAGIC, VERSION, 1, 2, 3, 4],
        &[0u8; 40],
    ] {
        assert!(cipher.decrypt(garbage, ROW).is_none(), "{garbage:?}");
        assert_eq!(cipher.reseal(garbage, ROW), Resealed::Unreadable);
    }
}

/// A legacy value whose random nonce begins exactly like a header naming one of the keys
/// is not taken for the new format: it opens to its own plaintext and is rewritten.
#[test]
fn a_legacy_nonce_that_looks_like_a_header_still_opens() {
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let cipher = Cipher::with_old_keys(&new, &[old]);
    for (sealed_with, named) in [(old, new), (old, old), (new, new), (new, old)] {
        let mut nonce = [0xAB; NONCE_LEN];
        nonce[0] = MAGIC;
        nonce[1] = VERSION;
        nonce[2..HEADER_LEN].copy_from_slice(&KeyId::of(&named).0);
        let value = legacy(&sealed_with, nonce, b"secret", ROW);
        assert_eq!(
            cipher.open(&value, ROW),
            Some((b"secret".to_vec(), Sealed::Legacy))
        );
        assert!(matches!(cipher.reseal(&value, ROW), Resealed::Rewritten(_)));
    }
}

/// The header is authenticated: a value whose key id or version is changed, or whose header
/// is cut off, opens to nothing (not to a legacy reading of the same bytes).
#[test]
fn a_changed_header_never_opens() {
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let cipher = Cipher::with_old_keys(&new, &[old]);
    let sealed = cipher.encrypt(b"secret", ROW);
    let mut renamed = sealed.clone();
    renamed[2..HEADER_LEN].copy_from_slice(&KeyId::of(&old).0);
    assert!(cipher.decrypt(&renamed, ROW).is_none());
    let mut version = sealed.clone();
    version[1] = 0x02;
    assert!(cipher.decrypt(&version, ROW).is_none());
    assert!(cipher.decrypt(&sealed[HEADER_LEN..], ROW).is_none());
}

#[test]
fn key_file_sits_beside_the_database() {
    let mut config = Config::default();
    config.database.url = "sqlite://data/m.db?mode=rwc".into();
    assert_eq!(key_file_path(&config), Some(PathBuf::from("data/m.db.key")));
    let mut memory = Config::default();
    memory.database.url = "sqlite::memory:".into();
    assert_eq!(key_file_path(&memory), None);
}

#[cfg(unix)]
#[test]
fn the_key_file_is_private_and_refused_when_it_is_not() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db.key");
    let key = load_or_create_key_file(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(load_or_create_key_file(&path).unwrap(), key, "read back");
    let leftovers = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file left behind");

    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = load_or_create_key_file(&path).unwrap_err();
    assert!(
        matches!(err, KeyError::Exposed { mode: 0o640, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    assert!(matches!(
        load_or_create_key_file(&path),
        Err(KeyError::Exposed { .. })
    ));
}

#[test]
fn configured_keys_are_read() {
    let mut config = Config::default();
    let (old, new) = ([1u8; 32], [2u8; 32]);
    config.security.encryption_key = Some(crate::config::Secret::new(STANDARD.encode(new)));
    config.security.encryption_old_keys = Some(crate::config::Secret::new(format!(
        " {} ,,{}",
        STANDARD.encode([3u8; 32]),
        STANDARD.encode(old)
    )));
    let cipher = Cipher::from_config(&config).unwrap();
    assert_eq!(cipher.current_key_id(), KeyId::of(&new));
    assert_eq!(
        cipher.old_key_ids(),
        vec![KeyId::of(&[3u8; 32]), KeyId::of(&old)]
    );
    config.security.encryption_old_keys = Some(crate::config::Secret::new("nope"));
    assert!(matches!(
        Cipher::from_config(&config),
        Err(KeyError::Malformed("encryption_old_keys"))
    ));
}
