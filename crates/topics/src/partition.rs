//! The spec's partitioner: `partition = abs(hashCode(key)) % partitions`, with Java's
//! `Long.hashCode` for `org_id` and `String.hashCode` for `pipeline_id`.
//!
//! One case needs a decision. When the 32-bit hash is `i32::MIN`, Java's `Math.abs` overflows
//! and returns `i32::MIN` itself, so the Java formula yields a *negative* partition
//! (`-8` for 12 partitions), which no producer can use. adpipe takes the absolute value in
//! 64 bits instead: the partition is `|hash| mod partitions` computed without overflow, which
//! equals the Java result for every other key and is the absolute value of the Java result
//! for the overflowing ones (`8` for 12 partitions). Examples of such keys: org_id
//! `2147483648`, `i64::MAX`, `i64::MIN`, and the string `"polygenelubricants"`.

/// The key a record is partitioned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey<'a> {
    /// An organisation id (most topics).
    Org(i64),
    /// An ETL pipeline id (`etl.execution`).
    Pipeline(&'a str),
}

/// Java's `Long.hashCode`: `(int) (value ^ (value >>> 32))`.
pub fn java_long_hash(value: i64) -> i32 {
    let v = value as u64;
    (v ^ (v >> 32)) as u32 as i32
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_string_hash(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The partition for `key` on a topic with `partitions` partitions (see the module docs for
/// the `abs` overflow case).
///
/// # Panics
/// If `partitions` is zero: a topic has at least one partition, checked when the config loads.
pub fn partition_for(key: PartitionKey<'_>, partitions: u32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    let hash = match key {
        PartitionKey::Org(id) => java_long_hash(id),
        PartitionKey::Pipeline(id) => java_string_hash(id),
    };
    // `unsigned_abs` cannot overflow: |i32::MIN| = 2^31 fits in u32.
    (hash.unsigned_abs() % partitions) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `(org_id, Long.hashCode, Math.abs(h) % 12, Math.abs(h) % 6)` printed by a Java 17 program
    /// (`Long o = id; Math.abs(o.hashCode()) % n`). Negative Java results are the overflow case.
    const JAVA_LONG: &[(i64, i32, i32, i32)] = &[
        (0, 0, 0, 0),
        (1, 1, 1, 1),
        (42, 42, 6, 0),
        (456, 456, 0, 0),
        (1001, 1001, 5, 5),
        (-1, 0, 0, 0),
        (-456, 455, 11, 5),
        (2147483647, 2147483647, 7, 1),
        (2147483648, -2147483648, -8, -2),
        (-2147483648, 2147483647, 7, 1),
        (4294967295, -1, 1, 1),
        (4294967296, 1, 1, 1),
        (9223372036854775807, -2147483648, -8, -2),
        (-9223372036854775808, -2147483648, -8, -2),
        (123456789012345, -2045923535, 11, 5),
        (-8589934592, -2, 2, 2),
        (6442450944, -2147483647, 7, 1),
    ];

    /// `(pipeline_id, String.hashCode, Math.abs(h) % 6)` from the same Java program.
    const JAVA_STRING: &[(&str, i32, i32)] = &[
        ("", 0, 0),
        ("a", 97, 1),
        ("bronze-processor", -510723041, 5),
        ("silver-processor", 1880184274, 4),
        ("gold-processor", 1660663653, 3),
        ("pipeline-42", 981428617, 1),
        ("ünïcödé", -609221899, 1),
        ("\u{1F600}x", 54959989, 1),
        ("polygenelubricants", -2147483648, -2),
    ];

    #[test]
    fn long_hash_and_partition_match_java() {
        for &(id, hash, p12, p6) in JAVA_LONG {
            assert_eq!(java_long_hash(id), hash, "hash of {id}");
            // Equal to Java where Java is valid, |Java| where Java's abs overflowed.
            assert_eq!(
                partition_for(PartitionKey::Org(id), 12),
                p12.abs(),
                "p12 of {id}"
            );
            assert_eq!(
                partition_for(PartitionKey::Org(id), 6),
                p6.abs(),
                "p6 of {id}"
            );
        }
    }

    #[test]
    fn string_hash_and_partition_match_java() {
        for &(id, hash, p6) in JAVA_STRING {
            assert_eq!(java_string_hash(id), hash, "hash of {id:?}");
            assert_eq!(
                partition_for(PartitionKey::Pipeline(id), 6),
                p6.abs(),
                "p6 of {id:?}"
            );
        }
    }

    #[test]
    fn the_overflow_case_is_a_valid_partition() {
        assert_eq!(java_long_hash(2_147_483_648), i32::MIN);
        assert_eq!(partition_for(PartitionKey::Org(2_147_483_648), 12), 8);
        assert_eq!(partition_for(PartitionKey::Org(i64::MIN), 1), 0);
    }

    proptest! {
        #[test]
        fn always_in_range(id in any::<i64>(), partitions in 1u32..=1024) {
            let p = partition_for(PartitionKey::Org(id), partitions);
            prop_assert!((0..partitions as i32).contains(&p));
        }

        #[test]
        fn equals_the_java_formula_where_java_is_defined(id in any::<i64>(), partitions in 1u32..=64) {
            let h = java_long_hash(id);
            prop_assume!(h != i32::MIN);
            prop_assert_eq!(partition_for(PartitionKey::Org(id), partitions), h.abs() % partitions as i32);
        }

        #[test]
        fn string_keys_in_range(id in ".*", partitions in 1u32..=64) {
            let p = partition_for(PartitionKey::Pipeline(&id), partitions);
            prop_assert!((0..partitions as i32).contains(&p));
        }
    }
}
