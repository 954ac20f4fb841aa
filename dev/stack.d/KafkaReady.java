// Waits until a Kafka broker answers real metadata requests, then creates
// topics idempotently. Run with the broker's own jars on the class path:
//
//   java -cp '.stack/kafka/libs/*' dev/stack.d/KafkaReady.java \
//        [--scram USER:PASSWORD] 127.0.0.1:9092 90 raw-logs:3 cleaned-logs:3 metrics:1
//
// --scram creates (or resets) the SCRAM-SHA-256 and SCRAM-SHA-512 credentials of USER.
//
// Exit status: 0 ready (and topics present), 1 not ready before the timeout,
// 2 topic creation failed.
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String scram = null;
        if (args.length >= 2 && args[0].equals("--scram")) {
            scram = args[1];
            args = java.util.Arrays.copyOfRange(args, 2, args.length);
        }
        if (args.length < 2) {
            System.err.println("usage: KafkaReady [--scram USER:PASSWORD] BOOTSTRAP TIMEOUT_SECONDS [TOPIC:PARTITIONS ...]");
            System.exit(64);
        }
        String bootstrap = args[0];
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000L;
        Map<String, Integer> wanted = new HashMap<>();
        List<String> order = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            String[] kv = args[i].split(":", 2);
            wanted.put(kv[0], kv.length > 1 ? Integer.parseInt(kv[1]) : 1);
            order.add(kv[0]);
        }

        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("client.id", "sluice-stack");
        props.put("request.timeout.ms", "5000");
        props.put("default.api.timeout.ms", "10000");
        props.put("reconnect.backoff.ms", "200");
        props.put("reconnect.backoff.max.ms", "1000");

        try (Admin admin = Admin.create(props)) {
            String lastError = "no answer yet";
            while (true) {
                try {
                    DescribeClusterResult d = admin.describeCluster();
                    int nodes = d.nodes().get(5, TimeUnit.SECONDS).size();
                    String clusterId = d.clusterId().get(5, TimeUnit.SECONDS);
                    // A metadata answer alone is not enough: the controller must
                    // accept writes, which listing topics and creating them need.
                    admin.listTopics().names().get(5, TimeUnit.SECONDS);
                    if (nodes > 0) {
                        System.out.println("kafka: cluster " + clusterId + " answers with " + nodes + " broker(s)");
                        break;
                    }
                    lastError = "metadata lists no broker";
                } catch (Exception e) {
                    Throwable c = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
                    lastError = c.getClass().getSimpleName() + ": " + c.getMessage();
                }
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("kafka: not ready in time (" + lastError + ")");
                    System.exit(1);
                }
                Thread.sleep(500);
            }

            if (scram != null) {
                String[] up = scram.split(":", 2);
                // One request per mechanism: the broker refuses two changes to one user at once.
                for (ScramMechanism m : new ScramMechanism[] {ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512}) {
                    List<UserScramCredentialAlteration> alter = new ArrayList<>();
                    alter.add(new UserScramCredentialUpsertion(up[0], new ScramCredentialInfo(m, 4096), up[1]));
                    admin.alterUserScramCredentials(alter).all().get(30, TimeUnit.SECONDS);
                }
                System.out.println("kafka: SCRAM user " + up[0] + " ready");
            }
            if (order.isEmpty()) {
                return;
            }
            Set<String> existing = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            List<NewTopic> create = new ArrayList<>();
            for (String t : order) {
                if (!existing.contains(t)) {
                    create.add(new NewTopic(t, wanted.get(t), (short) 1));
                }
            }
            boolean failed = false;
            if (!create.isEmpty()) {
                for (Map.Entry<String, org.apache.kafka.common.KafkaFuture<Void>> e :
                        admin.createTopics(create).values().entrySet()) {
                    try {
                        e.getValue().get(30, TimeUnit.SECONDS);
                        System.out.println("kafka: created topic " + e.getKey() + " (" + wanted.get(e.getKey()) + " partitions)");
                    } catch (ExecutionException ex) {
                        if (!(ex.getCause() instanceof TopicExistsException)) {
                            System.err.println("kafka: cannot create topic " + e.getKey() + ": " + ex.getCause());
                            failed = true;
                        }
                    }
                }
            }
            // Grow topics that exist with fewer partitions than wanted, and wait
            // until every partition has a leader so producers can write at once.
            while (true) {
                Map<String, TopicDescription> desc = admin.describeTopics(order).allTopicNames().get(30, TimeUnit.SECONDS);
                Map<String, NewPartitions> grow = new HashMap<>();
                boolean leaderless = false;
                for (String t : order) {
                    TopicDescription td = desc.get(t);
                    if (td.partitions().size() < wanted.get(t)) {
                        grow.put(t, NewPartitions.increaseTo(wanted.get(t)));
                    }
                    for (TopicPartitionInfo p : td.partitions()) {
                        if (p.leader() == null || p.leader().isEmpty()) {
                            leaderless = true;
                        }
                    }
                }
                if (!grow.isEmpty()) {
                    admin.createPartitions(grow).all().get(30, TimeUnit.SECONDS);
                    System.out.println("kafka: grew partitions of " + grow.keySet());
                    continue;
                }
                if (!leaderless) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("kafka: some partitions have no leader yet");
                    System.exit(2);
                }
                Thread.sleep(300);
            }
            if (failed) {
                System.exit(2);
            }
            System.out.println("kafka: topics ready: " + String.join(" ", args).substring(args[0].length() + args[1].length() + 2));
        }
    }
}
