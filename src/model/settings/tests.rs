use super::*;

#[test]
fn every_key_has_an_env_name_and_is_handled() {
    for k in KEYS {
        let mut env = BTreeMap::new();
        let value = match k.key {
            "provider" => "existing",
            "vm.cpus" | "vm.nodes" => "3",
            "vm.memory" | "vm.disk" => "9G",
            _ => "x",
        };
        env.insert(env_name(k.key), value.to_string());
        let layer = env_layer(&env).unwrap();
        assert_ne!(layer, Layer::default(), "{} not read from env", k.key);
    }
}

#[test]
fn byte_sizes_parse_and_print() {
    assert_eq!("8G".parse::<ByteSize>().unwrap(), ByteSize::gib(8));
    assert_eq!("512M".parse::<ByteSize>().unwrap().to_string(), "512M");
    assert_eq!("1.5G".parse::<ByteSize>().unwrap().to_string(), "1536M");
    assert_eq!("4GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(4));
    assert!("lots".parse::<ByteSize>().is_err());
}

/// Issue 12: Multipass reads K, M and G only (`src/utils/memory_size.cpp`), so whole TiB
/// values print as G and every printed size is an integer with one of those units.
#[test]
fn byte_sizes_print_only_units_multipass_reads() {
    assert_eq!("1T".parse::<ByteSize>().unwrap().to_string(), "1024G");
    assert_eq!("2TiB".parse::<ByteSize>().unwrap().to_string(), "2048G");
    assert_eq!("1.5T".parse::<ByteSize>().unwrap().to_string(), "1536G");
    for text in ["1T", "1.25T", "40G", "1.5G", "0.3G", "512M", "1000", "7K"] {
        let printed = text.parse::<ByteSize>().unwrap().to_string();
        let (digits, unit) = printed.split_at(printed.trim_end_matches(['K', 'M', 'G']).len());
        assert!(
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && unit.len() <= 1,
            "`{text}` printed as `{printed}`, which Multipass does not read"
        );
    }
}
