import Foundation

/// Facts about a built `.ko` that the results table shows. Kept in one place
/// so the reading can move to ModuleELF without touching callers.
enum ModuleFacts {
    static func size(path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue
    }

    static func vermagic(path: String) -> String? {
        // Interim: .modinfo holds NUL-separated key=value strings; find the
        // vermagic entry in the file's bytes. Replaced by ModuleELF once merged.
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let key = Array("vermagic=".utf8)
        let bytes = [UInt8](data)
        var i = 0
        while i + key.count < bytes.count {
            if bytes[i] == key[0], (i == 0 || bytes[i - 1] == 0), Array(bytes[i..<i + key.count]) == key {
                var j = i + key.count
                while j < bytes.count, bytes[j] != 0 { j += 1 }
                return String(decoding: bytes[(i + key.count)..<j], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }
}
