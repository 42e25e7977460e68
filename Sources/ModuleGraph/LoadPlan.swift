import CKmod
import Foundation
import NVBuildSupport

/// The modules a verify or try run loads, in order, and what was noticed on the way.
public struct LoadPlan: Sendable, Equatable {
    public var loads: [PlannedLoad]
    /// Arguments that named nothing loadable, install commands, dependency cycles.
    public var problems: [Diagnostic]
    /// Modules compiled into the kernel that the order mentions (nothing to load).
    public var builtin: [String]

    public init(loads: [PlannedLoad], problems: [Diagnostic], builtin: [String]) {
        self.loads = loads
        self.problems = problems
        self.builtin = builtin
    }

    /// The message that starts every dependency-cycle diagnostic.
    static let cyclePrefix = "dependency cycle: "

    /// The cycles among the problems, each as the modules on it in order (first repeated last).
    public var cycles: [[String]] {
        problems.compactMap { problem in
            guard problem.message.hasPrefix(Self.cyclePrefix) else { return nil }
            return problem.message.dropFirst(Self.cyclePrefix.count).components(separatedBy: " -> ")
        }
    }
}

/// JSON: `diagnostics` holds the typed problems; `problems` keeps the schema-1 strings
/// (file, then message) for readers written before them (docs/inspect-json-schema.md).
extension LoadPlan: Codable {
    enum CodingKeys: String, CodingKey { case loads, problems, diagnostics, builtin }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        loads = try container.decode([PlannedLoad].self, forKey: .loads)
        builtin = try container.decode([String].self, forKey: .builtin)
        if let diagnostics = try container.decodeIfPresent([Diagnostic].self, forKey: .diagnostics) {
            problems = diagnostics
        } else {
            problems = try container.decode([String].self, forKey: .problems).map { .warning($0) }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(loads, forKey: .loads)
        try container.encode(builtin, forKey: .builtin)
        try container.encode(problems, forKey: .diagnostics)
        try container.encode(problems.map { ($0.file.map { $0 + ": " } ?? "") + $0.message }, forKey: .problems)
    }
}

extension ModuleTree {
    /// A name the indexes do not know fails the plan: either the name is wrong or the
    /// indexes do not describe the tree (stale, or damaged in a way the structure check
    /// cannot see).
    static let lookupRemedy = "check the name, or pass the module file's path; if the module is installed, rewrite the indexes with depmod"

    /// Resolves arguments (names, aliases, module files) to module files in
    /// load order. With `dependencies`, each argument brings its dependencies
    /// first, as modprobe would, and a module is loaded once; without, exactly
    /// the named modules are loaded, in the given order, repeats included.
    public func loadPlan(for arguments: [String], dependencies: Bool = true) -> LoadPlan {
        var plan = LoadPlan(loads: [], problems: [], builtin: [])
        if dependencies {
            var planned: Set<String> = []
            // A module appears in the listing of every module that depends on it.
            var names: [String: String] = [:]
            for listing in dependencyListings(for: arguments) {
                for diagnostic in listing.diagnostics where !plan.problems.contains(diagnostic) { plan.problems.append(diagnostic) }
                if let error = listing.error, !listing.diagnostics.contains(where: { $0.severity == .error }) {
                    plan.problems.append(.error(error, remedy: Self.lookupRemedy))
                }
                for action in listing.actions {
                    switch action.kind {
                    case .insmod:
                        guard let path = action.path else { continue }
                        let name: String
                        if let known = names[path] {
                            name = known
                        } else {
                            name = moduleName(ofFile: path) ?? action.module
                            names[path] = name
                        }
                        if planned.insert(name).inserted { plan.loads.append(PlannedLoad(name: name, path: path)) }
                    case .builtin:
                        if !plan.builtin.contains(action.module) { plan.builtin.append(action.module) }
                    case .install:
                        plan.problems.append(.warning(
                            "\(action.module): modprobe would run an install command instead of loading it: \(action.command ?? "")"))
                    }
                }
            }
            plan.problems += dependencyCycles(among: plan.loads)
        } else {
            for argument in arguments {
                if Self.isModulePath(argument) {
                    if let name = moduleName(ofFile: argument) {
                        plan.loads.append(PlannedLoad(name: name, path: argument))
                    } else {
                        plan.problems.append(.warning("not a readable kernel module", file: argument))
                    }
                    continue
                }
                let listing = dependencyListings(for: [argument])[0]
                plan.problems += listing.diagnostics
                if let last = listing.actions.last, last.kind == .insmod, let path = last.path {
                    plan.loads.append(PlannedLoad(name: last.module, path: path))
                } else if let last = listing.actions.last, last.kind == .builtin {
                    plan.builtin.append(last.module)
                } else if !listing.diagnostics.contains(where: { $0.severity == .error }) {
                    plan.problems.append(listing.error.map { .error($0, remedy: Self.lookupRemedy) } ?? .warning("\(argument): nothing to load"))
                }
            }
        }
        return plan
    }

    /// Cycles in the `depends` of the planned modules (depmod refuses them; the
    /// kernel reports the unresolved symbols).
    func dependencyCycles(among loads: [PlannedLoad]) -> [Diagnostic] {
        var depends: [String: [String]] = [:]
        // depmod already refused cycles among the tree's own modules, and those
        // never depend on modules from elsewhere: only outside modules can close one.
        let outside = loads.filter { !$0.path.hasPrefix(moduleDirectory + "/") }
        if outside.isEmpty { return [] }
        for load in outside {
            var module: OpaquePointer?
            guard kmod_module_new_from_path(context, load.path, &module) >= 0, let module else { continue }
            depends[load.name] = modinfoValues(module, key: "depends").flatMap { $0.split(separator: ",").map { $0.replacingOccurrences(of: "-", with: "_") } }
            kmod_module_unref(module)
        }
        var problems: [Diagnostic] = []
        var reported: Set<String> = []
        for start in outside.map(\.name) {
            // Depth-first search for a path back to the start.
            var stack: [(String, [String])] = [(start, [start])]
            var seen: Set<String> = []
            while let (node, path) = stack.popLast() {
                for next in depends[node] ?? [] {
                    if next == start {
                        let cycle = path + [start]
                        let key = Set(cycle).sorted().joined(separator: ",")
                        if reported.insert(key).inserted {
                            problems.append(.warning(
                                LoadPlan.cyclePrefix + cycle.joined(separator: " -> "),
                                remedy: "neither module can load first; break the cycle in their sources"))
                        }
                    } else if seen.insert(next).inserted {
                        stack.append((next, path + [next]))
                    }
                }
            }
        }
        return problems
    }
}
