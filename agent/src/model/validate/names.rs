//! The character-level checks of v1 (upstream's validation regexes), written out by hand,
//! with the short reasons reported when they fail.

/// `name`: `^[a-zA-Z0-9_.-]{1,128}$` (node names, tags).
pub(super) fn is_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| is_word(b) || b == b'.' || b == b'-')
}

pub(super) const NAME_REASON: &str = "invalid name: use 1-128 of a-z A-Z 0-9 _ . -";

/// `namespacedname`: `^[a-zA-Z0-9_./-]{1,128}$` (profile, policy and endpoint names).
pub(super) fn is_namespaced_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(is_key_char)
}

pub(super) const NAMESPACED_NAME_REASON: &str = "invalid name: use 1-128 of a-z A-Z 0-9 _ . - /";

/// `tag`: the `name` regex (no `/`).
pub(super) fn is_tag(s: &str) -> bool {
    is_name(s)
}

pub(super) const TAG_REASON: &str = "invalid tag: use 1-128 of a-z A-Z 0-9 _ . -";

/// `interface`: `^[a-zA-Z0-9_.-]{1,15}$` (Linux interface names; `.` as in the libcalico-go
/// that calicoctl v1.6.5 ships).
pub(super) fn is_interface(s: &str) -> bool {
    (1..=15).contains(&s.len()) && s.bytes().all(|b| is_word(b) || b == b'.' || b == b'-')
}

pub(super) const INTERFACE_REASON: &str = "invalid interface name: use 1-15 of a-z A-Z 0-9 _ . -";

/// Label keys: `^[a-zA-Z0-9_./-]{1,512}$`, what the selector tokenizer accepts as a label.
pub(super) fn is_label_key(s: &str) -> bool {
    (1..=512).contains(&s.len()) && s.bytes().all(is_key_char)
}

pub(super) const LABEL_KEY_REASON: &str = "invalid label key: use 1-512 of a-z A-Z 0-9 _ . - /";

/// Label values: `^[a-zA-Z0-9]?([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$`. Empty is fine;
/// otherwise the last character is alphanumeric and, as the regex has it, a leading
/// non-alphanumeric character is allowed but costs the optional first slot (62 long at
/// most instead of 63).
pub(super) fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return true;
    };
    let max_len = if first.is_ascii_alphanumeric() {
        63
    } else {
        62
    };
    bytes.len() <= max_len
        && last.is_ascii_alphanumeric()
        && bytes.iter().all(|&b| is_word(b) || b == b'.' || b == b'-')
}

pub(super) const LABEL_VALUE_REASON: &str =
    "invalid label value: up to 63 of a-z A-Z 0-9 _ . -, ending with a letter or digit";

/// A MAC address as Go's `net.ParseMAC` reads it: 6, 8 or 20 octets written
/// `01:23:45:67:89:ab`, `01-23-45-67-89-ab` or `0123.4567.89ab`.
pub(super) fn is_mac(s: &str) -> bool {
    let octet_count_ok = |n: usize| matches!(n, 6 | 8 | 20);
    let all_hex = |group: &str, len: usize| {
        group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit())
    };
    for separator in [':', '-'] {
        if s.as_bytes().get(2) == Some(&(separator as u8)) {
            let groups: Vec<&str> = s.split(separator).collect();
            return octet_count_ok(groups.len()) && groups.iter().all(|g| all_hex(g, 2));
        }
    }
    let groups: Vec<&str> = s.split('.').collect();
    octet_count_ok(groups.len() * 2) && groups.iter().all(|g| all_hex(g, 4))
}

pub(super) const MAC_REASON: &str = "invalid MAC address";

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_key_char(b: u8) -> bool {
    is_word(b) || matches!(b, b'.' | b'/' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_follow_the_upstream_regex() {
        for ok in [
            "",
            "a",
            "gold._0-9",
            "2gold",
            "-a",
            &"a".repeat(63),
            &format!("-{}", "a".repeat(61)),
        ] {
            assert!(is_label_value(ok), "{ok:?} should be valid");
        }
        for bad in [
            "-",
            "a-",
            "~gold",
            "gold~",
            &"a".repeat(64),
            &format!("-{}", "a".repeat(62)),
        ] {
            assert!(!is_label_value(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn macs_in_the_three_go_forms() {
        for ok in [
            "ee:ee:ee:ee:ee:ee",
            "01-23-45-67-89-AB",
            "0123.4567.89ab",
            "01:23:45:67:89:ab:cd:ef",
        ] {
            assert!(is_mac(ok), "{ok}");
        }
        for bad in [
            "",
            "ee:ee:ee:ee:ee",
            "ee:ee:ee:ee:ee:eg",
            "ee-ee:ee:ee:ee:ee",
            "eeee.eeee",
            "e:ee:ee:ee:ee:ee",
        ] {
            assert!(!is_mac(bad), "{bad}");
        }
    }
}
