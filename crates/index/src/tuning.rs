//! RocksDB options: one place that says how the index uses the disk and memory.

use rocksdb::{
    BlockBasedOptions, Cache, DBCompactionStyle, DBCompressionType, DataBlockIndexType, Options,
};

use crate::{
    CF_BY_JOB, CF_BY_OPERATION, CF_BY_OPERATOR_TIME, CF_BY_TIME, CF_OPERATORS_BY_CAPABILITY, CF_RECEIPTS,
};

/// 16 KiB blocks: a receipt (leaf + ~20-hash proof + note) is ~1-2 KiB, so a block holds a
/// handful of neighbours; larger than the 4 KiB default to cut index size and SSD IOPS.
const BLOCK_SIZE: usize = 16 * 1024;
/// Full (format-v5+, not per-block) bloom filters at ~1% false positives: the usual sweet
/// spot between filter memory and wasted reads.
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Incremental fsync of SST and WAL files every 1 MiB, so the OS never flushes a huge
/// burst at once and write latency stays flat on SSDs.
const BYTES_PER_SYNC: u64 = 1024 * 1024;

/// Options shared by the whole database.
pub(crate) fn db_options(index: &crate::IndexOptions) -> Options {
    let mut o = Options::default();
    if index.statistics {
        o.enable_statistics();
    }
    // mmap reads skip a pread and a copy into the block cache for blocks the OS already
    // caches; whether that beats the block cache for this index is measured in
    // docs/PERFORMANCE.md (index_bench), so it stays a switch.
    o.set_allow_mmap_reads(index.mmap_reads);
    // The store creates itself and its column families on first open.
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // See BYTES_PER_SYNC.
    o.set_bytes_per_sync(BYTES_PER_SYNC);
    o.set_wal_bytes_per_sync(BYTES_PER_SYNC);
    // The WAL stays on (WriteOptions never disables it), so a multi-CF WriteBatch is atomic
    // across a crash without atomic_flush.
    o
}

/// Options of one column family; every family shares the same bounded block cache.
pub(crate) fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    // See BLOCK_SIZE.
    table.set_block_size(BLOCK_SIZE);
    // One LRU cache for all families bounds the index's read memory to block_cache_bytes.
    table.set_block_cache(cache);
    // Index and filter blocks live in that cache too (not on the heap, where they would grow
    // with the data); L0's are pinned because every read consults them.
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);

    let mut o = Options::default();
    // Level compaction: low space and read amplification, the right shape for a read-mostly
    // audit index on SSD (universal trades space for write speed we do not need).
    o.set_compaction_style(DBCompactionStyle::Level);
    // Dynamic level sizes keep ~90% of the data in the bottommost level, which is the one
    // that is compressed.
    o.set_level_compaction_dynamic_level_bytes(true);
    // Upper levels stay uncompressed: the data there is young and soon rewritten, and the
    // cheap codec (lz4) is not compiled into this build of RocksDB.
    o.set_compression_type(DBCompressionType::None);
    // zstd on the bottommost level, where the data settles for good: best ratio per CPU.
    o.set_bottommost_compression_type(DBCompressionType::Zstd);

    match name {
        CF_BY_OPERATION => {
            // Only whole-key point lookups hit this family (audits by operation id, and the
            // duplicate check of every ingested receipt, which mostly misses). So: no prefix
            // extractor (operation ids have no prefix worth seeking by, and a fixed-length
            // one would put every UUIDv7 of the same millisecond in one bucket), a
            // whole-key bloom filter on every level (no optimize_filters_for_hits: misses are
            // the common case on ingest), a whole-key bloom in the memtable too, and a hash
            // index inside data blocks so a hit skips the in-block binary search.
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            table.set_whole_key_filtering(true);
            table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
            table.set_data_block_hash_ratio(0.75);
            o.set_memtable_prefix_bloom_ratio(0.05);
            o.set_memtable_whole_key_filtering(true);
        }
        CF_RECEIPTS => {
            // Keys are append-only and sequential, so SST files never overlap and a lookup by
            // leaf index already lands in one file; the bloom filter only saves the data block
            // read for indexes that are not there.
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        }
        CF_BY_JOB | CF_BY_OPERATOR_TIME | CF_BY_TIME | CF_OPERATORS_BY_CAPABILITY => {
            // Only bounded range scans read these, never a point lookup, so a whole-key filter
            // would be built and never consulted. A prefix bloom would need a custom extractor
            // (ids are variable length) and saves at most one block per level of a narrow
            // scan that the file key ranges already confine: not worth it.
        }
        _ => {
            // checkpoints: point lookups by tree size, sequential like receipts.
            // operators: point lookups by id; a few thousand entries at most.
            // meta: a handful of keys that stay in the memtable and block cache.
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        }
    }
    o.set_block_based_table_factory(&table);
    o
}
