import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.join.ParentJoinPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * One real OpenSearch node for tests, run from the jars Maven Central serves.
 *
 * <p>Why this exists: the OpenSearch distribution tarball (with its bin/opensearch script and
 * modules/ folder) cannot be downloaded on our machines, but the server and its modules are
 * published as ordinary Maven artifacts. The node below is the same {@link Node} the
 * distribution starts; the modules that the distribution would load from modules/ (HTTP
 * transport, analysis-common, painless, ...) are handed to it as classpath plugins instead.
 * Everything else (settings, data path, single-node discovery) comes from the opensearch.yml in
 * the home folder given as the only argument.
 */
public final class SafekeepSearchNode {

    private static final List<Class<? extends Plugin>> MODULES = List.of(
            Netty4Plugin.class,
            CommonAnalysisPlugin.class,
            MapperExtrasPlugin.class,
            PainlessPlugin.class,
            ReindexPlugin.class,
            MatrixAggregationPlugin.class,
            ParentJoinPlugin.class);

    private SafekeepSearchNode() {
    }

    /** Node's plugin-list constructor is protected: it exists for exactly this embedding. */
    private static final class ClasspathNode extends Node {
        ClasspathNode(final Environment environment) {
            super(environment, MODULES, true);
        }
    }

    public static void main(final String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: SafekeepSearchNode <home folder with config/opensearch.yml>");
            System.exit(2);
        }
        final Path home = Path.of(args[0]).toAbsolutePath();
        final Settings input = Settings.builder().put("path.home", home.toString()).build();
        final Environment environment = InternalSettingsPreparer.prepareEnvironment(
                input, Map.of(), home.resolve("config"), () -> "safekeep-test");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);

        final Node node = new ClasspathNode(environment);
        final CountDownLatch closed = new CountDownLatch(1);
        // SIGTERM runs this hook: close the node properly so that stop is quick and clean.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (final Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "safekeep-node-shutdown"));
        node.start();
        closed.await();
    }
}
