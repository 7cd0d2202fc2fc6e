// A long-lived ACL administrator for the dev environment's secured broker (`scripts/dev-env
// acl-admin`): tests grant dozens of ACLs, and Kafka's AclCommand starts a JVM for each grant (tens
// of seconds on a busy machine), where this one JVM serves them all through kafka-clients' Admin API.
//
// Run as a single-file source program on the broker's classpath:
//   java -cp "$KAFKA_HOME/libs/*" AclAdmin.java BOOTSTRAP
// It prints "ready", then reads one grant a line, in AclCommand's words:
//   --add --allow-principal User:a [--allow-principal ...] --operation Write [--operation ...]
//         --topic T | --group G | --transactional-id ID | --cluster [...] [--resource-pattern-type prefixed]
// and answers each line with one line once the broker holds the bindings: "ok N" (N bindings, each
// principal allowed each operation on each resource from any host) or "error REASON".

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.utils.SecurityUtils;

public class AclAdmin {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(config);
                BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
            System.out.println("ready");
            for (String line; (line = in.readLine()) != null; ) {
                String answer;
                try {
                    List<AclBinding> bindings = grant(line.trim().split("\\s+"));
                    admin.createAcls(bindings).all().get();
                    answer = "ok " + bindings.size();
                } catch (Exception e) {
                    answer = "error " + e.toString().replace('\n', ' ');
                }
                System.out.println(answer);
            }
        }
    }

    /** The bindings one line's `--add ...` grants. */
    static List<AclBinding> grant(String[] words) {
        if (words.length == 0 || !words[0].equals("--add")) {
            throw new IllegalArgumentException("a line begins with --add");
        }
        List<String> principals = new ArrayList<>();
        List<AclOperation> operations = new ArrayList<>();
        List<ResourceType> types = new ArrayList<>();
        List<String> names = new ArrayList<>();
        PatternType pattern = PatternType.LITERAL;
        for (int i = 1; i < words.length; i++) {
            String option = words[i];
            if (option.equals("--cluster")) {
                types.add(ResourceType.CLUSTER);
                names.add("kafka-cluster");
                continue;
            }
            if (i + 1 == words.length) {
                throw new IllegalArgumentException(option + " without a value");
            }
            String value = words[++i];
            switch (option) {
                case "--allow-principal" -> principals.add(value);
                case "--operation" -> operations.add(SecurityUtils.operation(value));
                case "--topic" -> { types.add(ResourceType.TOPIC); names.add(value); }
                case "--group" -> { types.add(ResourceType.GROUP); names.add(value); }
                case "--transactional-id" -> {
                    types.add(ResourceType.TRANSACTIONAL_ID);
                    names.add(value);
                }
                case "--resource-pattern-type" -> pattern = PatternType.fromString(value.toUpperCase(Locale.ROOT));
                default -> throw new IllegalArgumentException("unknown option " + option);
            }
        }
        if (principals.isEmpty() || operations.isEmpty() || types.isEmpty()) {
            throw new IllegalArgumentException("a grant names principals, operations and resources");
        }
        if (operations.contains(AclOperation.UNKNOWN) || pattern == PatternType.UNKNOWN) {
            throw new IllegalArgumentException(
                    "unknown operation or pattern type in " + operations + " " + pattern);
        }
        List<AclBinding> bindings = new ArrayList<>();
        for (int r = 0; r < types.size(); r++) {
            ResourcePattern resource = new ResourcePattern(types.get(r), names.get(r), pattern);
            for (String principal : principals) {
                for (AclOperation operation : operations) {
                    bindings.add(new AclBinding(resource, new AccessControlEntry(
                            principal, "*", operation, AclPermissionType.ALLOW)));
                }
            }
        }
        return bindings;
    }
}
