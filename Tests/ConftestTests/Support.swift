import Conftest
import Foundation
import KernelTree
import NVBuildSupport
import TestSupport

/// Paths and kernels shared by the Conftest tests: the repository's own
/// catalog and fixture tree, and the Debian kernels scripts/setup installs.
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let catalogDirectory = root + "/conftest"
    static let fixtureTree = root + "/Tests/Fixtures/kernel-open"
    /// A tree whose conftest.sh has NVIDIA's shape, and the catalog verified against its arms.
    static let armsTree = root + "/Tests/Fixtures/arms-tree"
    static let armsCatalog = root + "/Tests/Fixtures/arms-catalog"

    static func catalog() throws -> Catalog { try Catalog.load(directory: catalogDirectory) }

    /// The standard 6.1 and 6.12 kernels every test target uses, in that order.
    static func kernels() -> [KernelTarget] {
        let discovered = KernelDiscovery().installedKernels()
        return InstalledKernels.standard.compactMap { release in discovered.first { $0.release == release } }
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
