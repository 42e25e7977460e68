import Foundation

/// One compile probe: what conftest.sh compiles as its own file.
struct CompileUnit: Sendable {
    /// Probes nvbuild writes itself have known shapes; the union compiler uses them.
    enum Shape: Sendable, Equatable {
        /// `NAME(ARGS);` in a function.
        case call(function: String)
        /// `offsetof(TYPE, MEMBER)` in a function.
        case offsetof(type: String, member: String)
        /// The catalog's own code.
        case code
    }

    var test: String
    var probe: String
    /// The include part of the source (after the preamble).
    var includes: String
    var body: String
    var files: [TestDefinition.AuxiliaryFile]
    var shape: Shape

    func source(preamble: String) -> String {
        preamble + (includes.isEmpty ? "" : includes + "\n") + body + "\n"
    }
}

/// How a unit's compile went, and the files its outcome rests on.
struct UnitResult: Sendable {
    var compiled: Bool
    var diagnostics: String
    var dependencies: [String]
    /// Shown by a union translation unit rather than compiled alone.
    var fromUnion = false
}

extension CompileRunner {
    /// The unit alone in its own translation unit, as conftest.sh compiles it.
    func compile(_ unit: CompileUnit, preamble: String, id: String) async throws -> UnitResult {
        let r = try await compile(id: id, source: unit.source(preamble: preamble), files: unit.files)
        return UnitResult(compiled: r.compiled, diagnostics: r.diagnostics, dependencies: r.dependencies)
    }
}
