import Foundation

/// How a probe chose catalog definitions for a tree.
public enum CatalogMatching: Sendable, Equatable, Codable {
    /// By the fingerprints of the tree's conftest.sh arms (`Upstream:`).
    case fingerprints(script: String)
    /// By test name and `Releases:`: the tree has no conftest.sh arms to compare.
    case names(reason: String)

    public var description: String {
        switch self {
        case .fingerprints(let script): return "catalog definitions chosen by the fingerprints of \(script)'s arms"
        case .names(let reason): return "catalog definitions chosen by test name and Releases: (\(reason))"
        }
    }
}

/// Why a requested test is computed by the tree's own conftest.sh.
public enum Delegation: String, Sendable, Equatable, Codable {
    /// The catalog has no definition of the name.
    case unknown
    /// The catalog defines the name, but none of its definitions was verified against
    /// this tree's arm: NVIDIA changed what the test checks or emits.
    case changedUpstream = "changed-upstream"
}

/// The catalog's answer for one requested test.
public enum CatalogChoice: Sendable {
    /// Use this definition; `arm` is the tree's arm it was verified against (nil: chosen by name).
    case definition(TestDefinition, arm: ConftestArms.Arm?)
    /// Delegate to the tree's conftest.sh; `candidates` are the definitions that did not match.
    case delegate(Delegation, arm: ConftestArms.Arm?, candidates: [TestDefinition])
    /// The tree's conftest.sh has no arm for the name: its own flow stops with "unknown conftest".
    case noArm

    public var definition: TestDefinition? {
        if case .definition(let d, _) = self { return d }
        return nil
    }
}

extension Catalog {
    /// The choice for `name`. With arms (a tree's conftest.sh), a definition applies only
    /// when its `Upstream:` lists the arm's fingerprint (exact names before templates);
    /// `Releases:` is not consulted. Without arms, the name and `Releases:` decide.
    public func choose(_ name: String, arms: ConftestArms?, release: String?) -> CatalogChoice {
        let candidates = candidates(name)
        guard let arms else {
            if let d = definition(name, release: release) { return .definition(d, arm: nil) }
            return .delegate(.unknown, arm: nil, candidates: candidates)
        }
        guard let arm = arms.arm(for: name) else { return .noArm }
        if let d = candidates.first(where: { $0.upstream.contains(arm.fingerprint) }) { return .definition(d, arm: arm) }
        return .delegate(candidates.isEmpty ? .unknown : .changedUpstream, arm: arm, candidates: candidates)
    }
}
