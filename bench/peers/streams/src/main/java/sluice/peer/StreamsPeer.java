package sluice.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.time.Instant;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of Sluice's chain for bench/peers/run: input topic → normalize
 * (the JSON subset, {@link Normalize}) → dedup → output topic, one stream thread.
 *
 * <p>Dedup as Sluice's dedup plugin (plugins/dedup/README.md) with its defaults: the key is
 * {@code event.id}, else service + timestamp + message; a record is dropped when its key was
 * seen within 600 s of event time in its own partition (a Kafka Streams task is one input
 * partition, and so is its store); a record older than the watermark minus the window
 * passes unremembered. The store is an in-memory LRU map of 100,000 keys per partition
 * without a changelog topic.
 *
 * <p>Usage: {@code java -jar streams-peer.jar BROKERS INPUT OUTPUT RECORDS APP_ID [PASSES]}.
 * Each pass is a fresh KafkaStreams instance (application id {@code APP_ID-p<n>}, output
 * {@code OUTPUT-p<n>}) reading INPUT from the start; a pass ends when RECORDS records were
 * processed and the instance closed (its output flushed, offsets committed); a record read
 * again after a rebalance is counted apart, as redelivered. Pass 1 runs a
 * cold JVM, later passes a warm one. On stdout, flushed at once: {@code FIRST <n>} at a pass's
 * first record and {@code DONE <n> <processed> <emitted> <redelivered> <rebalances>} after its close; the caller reads
 * the process's CPU time at those lines.
 */
public final class StreamsPeer {
    static final long WINDOW_NS = 600L * 1_000_000_000L;
    static final long MAX_FUTURE_NS = 300L * 1_000_000_000L;
    static final int MAX_ENTRIES = 100_000;

    static final AtomicLong processed = new AtomicLong();
    static final AtomicLong emitted = new AtomicLong();
    /** Records read again (a task's partition reassigned after a rebalance resumes at its
     * last commit): not counted towards RECORDS, so a pass still reads every offset. */
    static final AtomicLong redelivered = new AtomicLong();
    static final AtomicLong rebalances = new AtomicLong();
    static final ConcurrentHashMap<Integer, Long> highest = new ConcurrentHashMap<>();
    static volatile CountDownLatch done;
    static volatile long wanted;
    static volatile int pass;

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: streams-peer BROKERS INPUT OUTPUT RECORDS APP_ID [PASSES]");
            System.exit(2);
        }
        String brokers = args[0];
        String input = args[1];
        String output = args[2];
        wanted = Long.parseLong(args[3]);
        String appId = args[4];
        int passes = args.length > 5 ? Integer.parseInt(args[5]) : 1;
        for (int p = 1; p <= passes; p++) {
            pass = p;
            processed.set(0);
            emitted.set(0);
            redelivered.set(0);
            rebalances.set(0);
            highest.clear();
            done = new CountDownLatch(1);
            KafkaStreams streams = new KafkaStreams(
                    topology(input, output + "-p" + p), props(brokers, appId + "-p" + p));
            streams.setUncaughtExceptionHandler(e -> {
                e.printStackTrace();
                System.exit(1);
                return null;
            });
            streams.setStateListener((now, before) -> {
                if (now == KafkaStreams.State.REBALANCING && before == KafkaStreams.State.RUNNING) {
                    rebalances.incrementAndGet();
                }
            });
            streams.start();
            done.await();
            if (!streams.close(Duration.ofSeconds(120))) {
                System.err.println("streams-peer: close timed out");
                System.exit(1);
            }
            System.out.println("DONE " + p + " " + processed.get() + " " + emitted.get() + " "
                    + redelivered.get() + " " + rebalances.get());
            System.out.flush();
        }
    }

    static Properties props(String brokers, String appId) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        p.put(StreamsConfig.STATE_DIR_CONFIG,
                System.getProperty("java.io.tmpdir") + "/streams-peer-" + appId);
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        return p;
    }

    static org.apache.kafka.streams.Topology topology(String input, String output) {
        StreamsBuilder b = new StreamsBuilder();
        b.addStateStore(Stores.keyValueStoreBuilder(
                Stores.lruMap("dedup", MAX_ENTRIES), Serdes.String(), Serdes.Long())
                .withLoggingDisabled());
        b.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(NormalizeDedup::new, "dedup")
                .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        return b.build();
    }

    /** normalize, then dedup, per record; counts every input record. */
    static final class NormalizeDedup implements Processor<byte[], byte[], byte[], byte[]> {
        private final ObjectMapper json = new ObjectMapper();
        private ProcessorContext<byte[], byte[]> ctx;
        private KeyValueStore<String, Long> seen;
        private long watermark = Long.MIN_VALUE;

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            ctx = context;
            seen = context.getStateStore("dedup");
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            var meta = ctx.recordMetadata().orElseThrow();
            long last = highest.getOrDefault(meta.partition(), -1L);
            long n;
            if (meta.offset() > last) {
                highest.put(meta.partition(), meta.offset());
                n = processed.incrementAndGet();
            } else {
                redelivered.incrementAndGet();
                n = 0;
            }
            if (n == 1) {
                System.out.println("FIRST " + pass);
                System.out.flush();
            }
            try {
                ObjectNode out = Normalize.apply(json, r.value());
                if (out != null && !duplicate(out, r.timestamp())) {
                    ctx.forward(r.withValue(json.writeValueAsBytes(out)));
                    emitted.incrementAndGet();
                }
            } catch (java.io.IOException e) {
                throw new RuntimeException(e);
            }
            if (n == wanted) {
                done.countDown();
            }
        }

        private boolean duplicate(ObjectNode rec, long kafkaMs) {
            long t = eventNanos(rec, kafkaMs);
            long readNs = System.currentTimeMillis() * 1_000_000L;
            if (t <= readNs + MAX_FUTURE_NS && t > watermark) {
                watermark = t;
            }
            if (t < watermark - WINDOW_NS) {
                return false; // late: its peers may be forgotten already
            }
            String key = key(rec);
            Long first = seen.get(key);
            if (first != null && first >= watermark - WINDOW_NS && Math.abs(t - first) <= WINDOW_NS) {
                return true;
            }
            seen.put(key, t);
            return false;
        }

        private static long eventNanos(ObjectNode rec, long kafkaMs) {
            JsonNode ts = rec.get("@timestamp");
            if (ts == null) {
                return kafkaMs * 1_000_000L;
            }
            Instant i = Instant.parse(ts.asText());
            return i.getEpochSecond() * 1_000_000_000L + i.getNano();
        }

        private static String key(ObjectNode rec) {
            JsonNode id = rec.get("event.id");
            if (id != null) {
                return "i" + id.asText();
            }
            JsonNode service = rec.get("service.name");
            JsonNode ts = rec.get("@timestamp");
            JsonNode body = rec.get("message");
            return "s" + (service == null ? "" : service.asText()).length() + ":" + service
                    + "|" + ts + "|" + body;
        }
    }
}
