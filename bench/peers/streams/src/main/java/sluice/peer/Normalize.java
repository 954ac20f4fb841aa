package sluice.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.math.BigDecimal;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The part of Sluice's normalize plugin (plugins/normalize/README.md) that JSON lines exercise:
 * nested objects flattened with dots, the first present alias of each ECS field taken, the
 * rest kept under {@code labels.<key>}. The text formats (logfmt, syslog, access logs, ...)
 * are not read: a line that is no JSON object comes back as null.
 *
 * <p>Output fields in Sluice's order: {@code @timestamp}, {@code log.level}, {@code message},
 * the attributes in the table's order, then the labels.
 */
final class Normalize {
    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;
    private static final DateTimeFormatter NANOS =
            DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSSSSSSS'Z'").withZone(ZoneOffset.UTC);

    private static final String[] TIMESTAMP = {"@timestamp", "timestamp", "ts", "time", "datetime",
        "date", "event_time", "eventTime", "time_local", "time_iso8601", "asctime", "log_time",
        "Timestamp", "t"};
    private static final String[] BODY = {"message", "msg", "@message", "log", "text",
        "short_message", "full_message", "body", "Body", "event"};
    private static final String[] LEVEL = {"log.level", "level", "lvl", "severity", "severity_text",
        "loglevel", "log_level", "levelname", "level_name"};
    private static final String[] DURATION_MS = {"latency_ms", "duration_ms", "elapsed_ms",
        "response_time_ms", "took_ms"};

    /** Text attributes: output name, then its aliases. */
    private static final String[][] TEXT = {
        {"service.name", "service", "svc", "service_name", "serviceName", "app", "application",
            "app_name", "appname", "component", "program", "logger", "logger_name", "loggerName"},
        {"host.name", "host", "hostname", "host_name", "server", "nodename", "node_name"},
        {"event.id", "event_id", "eventId", "eventID"},
        {"trace.id", "trace_id", "traceId", "traceID", "traceid"},
        {"span.id", "span_id", "spanId", "spanID", "spanid"},
        {"http.request.method", "http.method", "method", "request_method", "http_method", "verb"},
    };
    private static final String[] PATH = {"url.path", "http.path", "path", "request_path", "url",
        "uri", "request_uri", "http.url", "http.target"};
    private static final String[] STATUS = {"http.response.status_code", "http.status",
        "http.status_code", "status", "status_code", "statusCode", "http_status",
        "response_status", "response_code"};

    private Normalize() {}

    /** The normalized record of one JSON line, or null when the line is no JSON object. */
    static ObjectNode apply(ObjectMapper json, byte[] line) {
        JsonNode root;
        try {
            root = json.readTree(line);
        } catch (java.io.IOException e) {
            return null;
        }
        if (root == null || !root.isObject()) {
            return null;
        }
        Map<String, JsonNode> in = new LinkedHashMap<>();
        flatten("", root, in);
        ObjectNode out = NODES.objectNode();
        Map<String, JsonNode> invalid = new LinkedHashMap<>();

        JsonNode ts = take(in, TIMESTAMP, invalid);
        if (ts != null) {
            String text = timestamp(ts);
            if (text != null) {
                out.put("@timestamp", text);
            } else {
                invalid.put(lastKey, ts);
            }
        }
        JsonNode level = take(in, LEVEL, invalid);
        if (level != null && level.isTextual()) {
            out.put("log.level", level(level.asText()));
        }
        JsonNode body = take(in, BODY, invalid);
        if (body != null) {
            out.put("message", body.isTextual() ? body.asText() : body.toString());
        }
        for (String[] field : TEXT) {
            JsonNode v = take(in, field, invalid);
            if (v != null && !v.isNull() && !(v.isTextual() && v.asText().isEmpty())) {
                out.put(field[0], v.isTextual() ? v.asText() : v.toString());
            }
        }
        JsonNode path = take(in, PATH, invalid);
        if (path != null && path.isTextual()) {
            String p = path.asText();
            int q = p.indexOf('?');
            out.put("url.path", q < 0 ? p : p.substring(0, q));
            if (q >= 0) {
                out.put("url.query", p.substring(q + 1));
            }
        }
        JsonNode status = take(in, STATUS, invalid);
        if (status != null) {
            if (status.canConvertToInt() && status.isIntegralNumber()
                    && status.asInt() >= 100 && status.asInt() <= 599) {
                out.put("http.response.status_code", status.asInt());
            } else {
                invalid.put(lastKey, status);
            }
        }
        JsonNode ms = take(in, DURATION_MS, invalid);
        if (ms != null && ms.isNumber()) {
            BigDecimal d = ms.decimalValue();
            out.put("event.duration", d.movePointRight(6).setScale(0, java.math.RoundingMode.HALF_EVEN)
                    .longValueExact());
            out.put("latency_ms", ms.doubleValue());
        }
        for (Map.Entry<String, JsonNode> e : in.entrySet()) {
            out.set("labels." + e.getKey(), e.getValue());
        }
        for (Map.Entry<String, JsonNode> e : invalid.entrySet()) {
            out.set("labels." + e.getKey(), e.getValue());
        }
        return out;
    }

    /** Objects flattened with dotted keys, as Sluice's host decodes JSON. */
    private static void flatten(String prefix, JsonNode node, Map<String, JsonNode> into) {
        var it = node.fields();
        while (it.hasNext()) {
            var e = it.next();
            String key = prefix.isEmpty() ? e.getKey() : prefix + "." + e.getKey();
            if (e.getValue().isObject() && !e.getValue().isEmpty()) {
                flatten(key, e.getValue(), into);
            } else {
                into.put(key, e.getValue());
            }
        }
    }

    /** The key {@link #take} took last (one record is normalized at a time per thread). */
    private static String lastKey;

    /**
     * The first present alias, removed from the input (its key in {@link #lastKey}); aliases
     * that lose to it stay in the input and become labels.
     */
    private static JsonNode take(Map<String, JsonNode> in, String[] aliases,
                                 Map<String, JsonNode> invalid) {
        for (String a : aliases) {
            JsonNode v = in.remove(a);
            if (v != null) {
                lastKey = a;
                return v;
            }
        }
        return null;
    }

    private static String timestamp(JsonNode v) {
        try {
            if (v.isNumber()) {
                BigDecimal n = v.decimalValue();
                double mag = Math.abs(n.doubleValue());
                int shift = mag < 1e11 ? 9 : mag < 1e14 ? 6 : mag < 1e17 ? 3 : 0;
                BigDecimal ns = n.movePointRight(shift);
                long nanos = ns.longValue();
                return NANOS.format(Instant.ofEpochSecond(Math.floorDiv(nanos, 1_000_000_000L),
                        Math.floorMod(nanos, 1_000_000_000L)));
            }
            if (v.isTextual()) {
                return NANOS.format(Instant.parse(v.asText()));
            }
        } catch (RuntimeException e) {
            return null;
        }
        return null;
    }

    private static String level(String word) {
        String w = word.toLowerCase(Locale.ROOT);
        switch (w) {
            case "trace": case "trc": case "verbose": case "finest": return "trace";
            case "debug": case "dbg": case "dbug": case "fine": return "debug";
            case "info": case "inf": case "information": case "informational": case "notice":
                return "info";
            case "warn": case "warning": case "wrn": return "warn";
            case "error": case "err": case "eror": case "severe": return "error";
            case "crit": case "critical": case "alert": case "emerg": case "emergency":
            case "panic": case "fatal":
                return "fatal";
            default: return w;
        }
    }
}
