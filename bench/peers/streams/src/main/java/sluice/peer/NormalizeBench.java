package sluice.peer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The peer's per-record work without Kafka Streams: normalize and serialize every line of a
 * file, several times over in one JVM, and print the CPU per pass. Separates the cost of the
 * work from the framework's. Usage: {@code java -cp streams-peer.jar sluice.peer.NormalizeBench
 * FILE [PASSES]}.
 */
public final class NormalizeBench {
    public static void main(String[] args) throws Exception {
        List<byte[]> lines = Files.readAllLines(Path.of(args[0])).stream()
                .map(String::getBytes).toList();
        int passes = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        ObjectMapper json = new ObjectMapper();
        var os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        long bytes = 0;
        for (int p = 1; p <= passes; p++) {
            long cpu0 = os.getProcessCpuTime();
            for (byte[] line : lines) {
                ObjectNode out = Normalize.apply(json, line);
                bytes += json.writeValueAsBytes(out).length;
            }
            double cpu = (os.getProcessCpuTime() - cpu0) / 1e9;
            System.out.printf("pass %d: %.0f records / CPU-s (%d bytes)%n", p, lines.size() / cpu, bytes);
        }
    }
}
