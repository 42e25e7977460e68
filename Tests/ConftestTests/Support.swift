import Conftest
import Foundation
import KernelTree
import NVBuildSupport

/// Paths and kernels shared by the Conftest tests: the repository's own
/// catalog and fixture tree, and the Debian kernels scripts/setup installs.
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let catalogDirectory = root + "/conftest"
    static let fixtureTree = root + "/Tests/Fixtures/kernel-open"
    static let golden = root + "/Tests/Fixtures/golden"

    static func catalog() throws -> Catalog { try Catalog.load(directory: catalogDirectory) }

    /// The standard (non-rt, non-cloud) 6.1 and 6.12 kernels, in that order.
    static func kernels() -> [KernelTarget] {
        KernelDiscovery().installedKernels()
            .filter { !$0.release.contains("-rt") && !$0.release.contains("-cloud") }
            .sorted { $0.release < $1.release }
    }

    static func scratch(_ name: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-test-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func options(tree: String = fixtureTree, kernel: KernelTarget, environment: [String: String] = [:],
                        cache: ResultCache? = nil, compiler: String? = nil, only: Set<String>? = nil) throws -> ProbeOptions {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        for k in ["CC", "IGNORE_PREEMPT_RT_PRESENCE", "NV_KERNEL_MODULES", "NV_EXCLUDE_KERNEL_MODULES"] where environment[k] == nil {
            env.removeValue(forKey: k)
        }
        return ProbeOptions(tree: try ConftestRequests.read(path: tree), kernel: kernel, catalog: try catalog(), jobs: 2,
                            environment: env, compilerOverride: compiler, onlyTests: only, cache: cache)
    }
}
