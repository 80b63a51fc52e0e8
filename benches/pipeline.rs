//! Criterion benches of the per-byte hot paths: FastCDC chunking, keyed BLAKE3 chunk ids,
//! AES-256-GCM sealing with both backends. `benches/compare.sh` sets the same paths
//! against b3sum, openssl and fio on the same machine.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use barge::chunker::{ChunkParams, chunk_stream};
use barge::crypto::seal::{aad, nonce};
use barge::crypto::{ChunkHasher, ChunkId, MasterKey, SealBackend, SegmentCipher};
use barge::sample::Filler;

fn bench(c: &mut Criterion) {
    let data = Filler::new(1).bytes(32 << 20);

    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc-512k-1m-8m", |b| {
        b.iter(|| {
            let mut n = 0;
            chunk_stream(
                &data[..],
                ChunkParams::default(),
                None,
                &Default::default(),
                |_| {
                    n += 1;
                    Ok(())
                },
            )
            .expect("chunking in memory cannot fail");
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hash");
    let chunk = &data[..2 << 20];
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    let h = ChunkHasher::new(&MasterKey::from_bytes([9; 32]));
    g.bench_function("keyed-blake3-2MiB", |b| b.iter(|| h.id(chunk)));
    g.finish();

    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    for backend in [SealBackend::AwsLc, SealBackend::RustCrypto] {
        let cipher = SegmentCipher::new(backend, &[5; 32]);
        let id = ChunkId([1; 32]);
        let mut buf = chunk.to_vec();
        g.bench_with_input(
            BenchmarkId::new("aes-256-gcm-2MiB", format!("{backend:?}")),
            &backend,
            |b, _| {
                b.iter(|| {
                    buf.truncate(chunk.len());
                    cipher
                        .seal(nonce(4096), &aad(&id, 1, 4096), &mut buf)
                        .expect("seal");
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
