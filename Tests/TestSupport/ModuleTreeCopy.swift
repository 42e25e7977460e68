import Foundation

/// A copy of an installed kernel's module tree under a temporary depmod-style base
/// directory (`ROOT/lib/modules/RELEASE`), for tests that damage its indexes or files.
public struct ModuleTreeCopy: Sendable {
    public let root: String
    public let release: String
    public var directory: String { root + "/lib/modules/" + release }

    /// Copies the modules.* files of `release`, the first module modules.dep lists, and the
    /// module files of `modules` (names such as "ext4") with the dependencies modules.dep gives them. With `reindex`,
    /// depmod then rewrites the indexes for just those modules (small, real indexes).
    public static func make(release: String, modules: [String], reindex: Bool = false) throws -> ModuleTreeCopy {
        let source = "/lib/modules/\(release)"
        let root = FileManager.default.temporaryDirectory.path + "/nvbuild-tree-\(UUID().uuidString)"
        let copy = ModuleTreeCopy(root: root, release: release)
        let files = FileManager.default
        try files.createDirectory(atPath: copy.directory, withIntermediateDirectories: true)
        for name in try files.contentsOfDirectory(atPath: source) where name.hasPrefix("modules.") {
            try files.copyItem(atPath: source + "/" + name, toPath: copy.directory + "/" + name)
        }
        let dependencyLines = try String(contentsOfFile: source + "/modules.dep", encoding: .utf8).split(separator: "\n")
        // The first module of modules.dep is the one `modules verify` reads the kernel's
        // vermagic and signer from.
        var relativePaths: Set<String> = dependencyLines.first.map { [String($0.prefix { $0 != ":" })] } ?? []
        for module in modules {
            guard let line = dependencyLines.first(where: { moduleName(String($0.prefix { $0 != ":" })) == module }) else {
                throw Missing(description: "\(source)/modules.dep has no module \(module)")
            }
            for field in line.split(whereSeparator: { $0 == " " || $0 == ":" }) { relativePaths.insert(String(field)) }
        }
        for relative in relativePaths {
            let target = copy.directory + "/" + relative
            try files.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try files.copyItem(atPath: source + "/" + relative, toPath: target)
        }
        if reindex {
            let depmod = ["/usr/sbin/depmod", "/sbin/depmod"].first { files.isExecutableFile(atPath: $0) } ?? "depmod"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: depmod.hasPrefix("/") ? depmod : "/usr/bin/env")
            process.arguments = (depmod.hasPrefix("/") ? [] : [depmod]) + ["-b", root, release]
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw Missing(description: "depmod -b \(root) \(release) failed") }
        }
        return copy
    }

    /// The copied path (relative to the module directory) of each module file modules.dep
    /// names for `module`: its own first, then its dependencies.
    public func modulePaths(_ module: String) throws -> [String] {
        let lines = try String(contentsOfFile: directory + "/modules.dep", encoding: .utf8).split(separator: "\n")
        guard let line = lines.first(where: { Self.moduleName(String($0.prefix { $0 != ":" })) == module }) else { return [] }
        return line.split(whereSeparator: { $0 == " " || $0 == ":" }).map(String.init)
    }

    /// Copies one more module file (a path under the module directory) from the installed tree.
    public func addModuleFile(_ relative: String) throws {
        let target = directory + "/" + relative
        if FileManager.default.fileExists(atPath: target) { return }
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/lib/modules/\(release)/" + relative, toPath: target)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: root) }

    static func moduleName(_ path: String) -> String {
        var name = String(path.split(separator: "/").last ?? "")
        for suffix in [".xz", ".zst", ".gz", ".ko"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
        return name
    }

    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }
}
