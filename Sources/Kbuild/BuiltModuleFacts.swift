import Foundation
import ModuleELF

/// Facts about a built `.ko` that the results table shows, kept in one place.
enum BuiltModuleFacts {
    static func size(path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue
    }

    /// The module's `vermagic` from its .modinfo section, read through ModuleELF.
    static func vermagic(path: String) -> String? {
        guard let module = try? ModuleFile.read(path: path) else { return nil }
        return module.values("vermagic").first
    }
}
