import Foundation
import Testing
import NVBuildSupport
import TestSupport

/// The Debian kernels the set-up script installs, with where their modules live.
struct InstalledKernel: Sendable, CustomStringConvertible {
    var release: String
    var description: String { release }
    var moduleDirectory: String { "/lib/modules/\(release)/kernel" }
    var symversPath: String { "/lib/modules/\(release)/build/Module.symvers" }

    static let all: [InstalledKernel] = InstalledKernels.standard.map { InstalledKernel(release: $0) }

    /// Every module file, sorted, so samples are deterministic.
    func modules() -> [String] {
        // Headers alone give no modules: say so rather than compare an empty set.
        if let problem = InstalledKernels.imageProblem(release) { Issue.record(Comment(rawValue: problem)) }
        guard let walker = FileManager.default.enumerator(atPath: moduleDirectory) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            if relative.hasSuffix(".ko") || relative.hasSuffix(".ko.xz") || relative.hasSuffix(".ko.zst") || relative.hasSuffix(".ko.gz") {
                found.append(moduleDirectory + "/" + relative)
            }
        }
        return found.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Evenly spaced modules across the sorted list: at least `count`, always the same ones.
    func sample(_ count: Int) -> [String] {
        let all = modules()
        guard all.count > count else { return all }
        let step = all.count / count
        return stride(from: 0, to: all.count, by: step).map { all[$0] }
    }
}

/// Runs a real tool and returns its standard output byte for byte (through a file, so
/// nothing is decoded as text); its exit status and standard error are not looked at.
@discardableResult
func runTool(_ arguments: [String]) async throws -> Data {
    let output = NSTemporaryDirectory() + "moduleelf-tool-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: output) }
    _ = try await ProcessRunner().run(arguments, standardOutputPath: output)
    return FileManager.default.contents(atPath: output) ?? Data()
}

/// A scratch directory removed when the value goes away.
final class ScratchDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "/moduleelf-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let file = path + "/" + name
        _ = FileManager.default.createFile(atPath: file, contents: Data(bytes))
        return file
    }
}

/// `Module.symvers`: symbol → (crc, module, export type, namespace).
func readSymvers(_ path: String) throws -> [String: (crc: UInt64, module: String, type: String, namespace: String?)] {
    var table: [String: (crc: UInt64, module: String, type: String, namespace: String?)] = [:]
    for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count >= 4, let crc = UInt64(fields[0].dropFirst(2), radix: 16) else { continue }
        table[String(fields[1])] = (crc, String(fields[2]), String(fields[3]), fields.count > 4 && !fields[4].isEmpty ? String(fields[4]) : nil)
    }
    return table
}
