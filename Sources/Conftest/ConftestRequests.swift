import Foundation
import NVBuildSupport

/// The conftest requests of an NVIDIA-style driver tree (`kernel-open/`),
/// read the way its Kbuild reads them.
public struct ConftestRequests: Sendable {
    /// The five request lists, each feeding one generated header.
    public enum Header: String, Sendable, CaseIterable, Codable {
        case functions, generic, macros, symbols, types

        /// The Kbuild variable that feeds this header.
        var variable: String {
            switch self {
            case .functions: return "NV_CONFTEST_FUNCTION_COMPILE_TESTS"
            case .generic: return "NV_CONFTEST_GENERIC_COMPILE_TESTS"
            case .macros: return "NV_CONFTEST_MACRO_COMPILE_TESTS"
            case .symbols: return "NV_CONFTEST_SYMBOL_COMPILE_TESTS"
            case .types: return "NV_CONFTEST_TYPE_COMPILE_TESTS"
            }
        }

        public var fileName: String { rawValue + ".h" }
    }

    /// Modules the driver Makefile builds when they exist, in its order.
    public static let knownModules = ["nvidia", "nvidia-uvm", "nvidia-vgpu-vfio", "nvidia-modeset", "nvidia-drm", "nvidia-peermem"]

    public var path: String
    public var modules: [String]
    /// Per header, the requested tests in first-appearance order.
    public var requests: [Header: [String]]
    /// Header paths from header-presence-tests.mk, in file order.
    public var headerPresenceTests: [String]
    /// `NV_VERSION_STRING` from the tree's Kbuild, when it has one.
    public var driverVersion: String?
    /// The tree's own conftest.sh, used to delegate tests the catalog lacks.
    public var conftestScript: String?
    /// `patch-*.h` files beside conftest.sh, sorted as the shell's glob sorts them.
    public var patchFiles: [String]

    /// Every distinct requested test, in the order the headers first request them.
    public var allTests: [String] {
        var seen = Set<String>()
        var result: [String] = []
        for header in Header.allCases {
            for t in requests[header] ?? [] where seen.insert(t).inserted { result.append(t) }
        }
        return result
    }

    /// Reads a tree. `modules` and `excluded` mirror NV_KERNEL_MODULES and NV_EXCLUDE_KERNEL_MODULES.
    public static func read(path: String, modules requested: [String]? = nil, excluded: [String] = []) throws -> ConftestRequests {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw UserError(.environment, "\(path): driver tree not found; pass the kernel-open/ directory with --tree")
        }
        guard fm.isReadableFile(atPath: path + "/Kbuild") else {
            throw UserError(.environment, "\(path)/Kbuild: not readable; --tree must name a Kbuild driver tree such as NVIDIA's kernel-open/")
        }
        let kbuild = try TextFile.read(path + "/Kbuild")
        var available = requested ?? knownModules.filter { fm.fileExists(atPath: "\(path)/\($0)") }
        if requested == nil && available.isEmpty {
            // Trees shaped like kernel-open/ but with other module names declare their default list.
            available = MakeSyntax.listValue(of: "NV_KERNEL_MODULES", in: kbuild)
                .filter { fm.fileExists(atPath: "\(path)/\($0)/\($0).Kbuild") }
        }
        let modules = available.filter { !excluded.contains($0) }

        var requests: [Header: [String]] = [:]
        var seen: [Header: Set<String>] = [:]
        for module in modules {
            let fragment = "\(path)/\(module)/\(module).Kbuild"
            guard fm.fileExists(atPath: fragment) else {
                throw UserError(.environment, "\(fragment): missing; module '\(module)' was requested but the tree has no Kbuild fragment for it")
            }
            for (variable, test) in try requestsOf(fragment: fragment, tree: path) {
                guard let header = Header.allCases.first(where: { $0.variable == variable }) else { continue }
                if seen[header, default: []].insert(test).inserted { requests[header, default: []].append(test) }
            }
        }

        var headerTests: [String] = []
        let presencePath = path + "/header-presence-tests.mk"
        if let text = try TextFile.readIfPresent(presencePath) {
            headerTests = MakeSyntax.listValue(of: "NV_HEADER_PRESENCE_TESTS", in: text)
        }
        let script = path + "/conftest.sh"
        let patches = ((try? fm.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasPrefix("patch-") && $0.hasSuffix(".h") }
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        return ConftestRequests(
            path: path, modules: modules, requests: requests, headerPresenceTests: headerTests,
            driverVersion: versionString(kbuild: kbuild),
            conftestScript: fm.isReadableFile(atPath: script) ? script : nil,
            patchFiles: patches
        )
    }

    /// `(variable, test)` pairs of a fragment in file order, following `include $(src)/...` lines.
    static func requestsOf(fragment: String, tree: String, depth: Int = 0) throws -> [(String, String)] {
        guard depth < 8, let text = try TextFile.readIfPresent(fragment) else { return [] }
        var result: [(String, String)] = []
        for line in MakeSyntax.logicalLines(text) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("include ") {
                let target = trimmed.dropFirst("include ".count).trimmingCharacters(in: .whitespaces)
                    .replacingOccurrences(of: "$(src)", with: tree)
                result += try requestsOf(fragment: target, tree: tree, depth: depth + 1)
                continue
            }
            guard trimmed.hasPrefix("NV_CONFTEST_"), let plus = trimmed.range(of: "+=") else { continue }
            let variable = trimmed[..<plus.lowerBound].trimmingCharacters(in: .whitespaces)
            for word in trimmed[plus.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                result.append((variable, String(word)))
            }
        }
        return result
    }

    static func versionString(kbuild: String) -> String? {
        guard let r = kbuild.range(of: "NV_VERSION_STRING=") else { return nil }
        let rest = kbuild[r.upperBound...].prefix { $0 != "\n" }
        let cleaned = rest.replacingOccurrences(of: "\\\"", with: "").replacingOccurrences(of: "\"", with: "")
            .trimmingCharacters(in: .whitespaces)
        return cleaned.isEmpty ? nil : cleaned
    }

    /// The macro a header-presence test defines: NV_ + path upper-cased, with / . - as _, + _PRESENT.
    public static func presenceMacro(for header: String) -> String {
        let mapped = header.uppercased().map { "/.-".contains($0) ? "_" : String($0) }.joined()
        return "NV_\(mapped)_PRESENT"
    }
}
