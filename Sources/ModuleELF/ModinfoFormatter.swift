/// Renders what `modinfo FILE` and `modinfo -F NAME FILE` print (kmod 30 with OpenSSL),
/// as bytes. Pure functions: the CLI decides where the bytes go.
public enum ModinfoFormatter {
    /// modinfo's `filename:` is the argument made absolute against the working directory,
    /// without resolving `..` or symbolic links.
    public static func absolutePath(_ path: String, currentDirectory: String) -> String {
        path.hasPrefix("/") ? path : currentDirectory + "/" + path
    }

    /// The module's information list as libkmod builds it: `.modinfo` in file order, then
    /// the signature fields.
    public static func infoList(_ module: ModuleFile) -> [ModinfoEntry] {
        var list = module.modinfo
        if let signature = module.signature, signature.placement != .compressedThenSigned {
            list.append(ModinfoEntry(key: "sig_id", value: signature.idType))
            list.append(ModinfoEntry(keyBytes: Array("signer".utf8), valueBytes: signature.signerBytes))
            list.append(ModinfoEntry(keyBytes: Array("sig_key".utf8), valueBytes: hexLines(signature.keyID)))
            list.append(ModinfoEntry(key: "sig_hashalgo", value: signature.hashAlgorithm))
            list.append(ModinfoEntry(keyBytes: Array("signature".utf8), valueBytes: hexLines(signature.signature)))
        }
        return list
    }

    /// `AB:CD:...`, twenty bytes per line, continuation lines indented by two tabs.
    static func hexLines(_ bytes: [UInt8]) -> [UInt8] {
        let digits = Array("0123456789ABCDEF".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 3 + bytes.count / 20 * 3)
        for (index, byte) in bytes.enumerated() {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xF)])
            if index < bytes.count - 1 {
                text.append(UInt8(ascii: ":"))
                if (index + 1) % 20 == 0 { text.append(contentsOf: [0x0A, 0x09, 0x09]) }
            }
        }
        return text
    }

    private struct Parameter {
        var name: ArraySlice<UInt8>
        var description: ArraySlice<UInt8>?
        var type: ArraySlice<UInt8>?
    }

    /// Merges `parm` and `parmtype` by parameter name; later values win. Entries without
    /// a colon are ignored (modinfo reports them on stderr). modinfo keeps the list newest
    /// first, so the result is in reverse order of first appearance.
    private static func parameters(_ list: [ModinfoEntry]) -> [Parameter] {
        var merged: [Parameter] = []
        let parm = Array("parm".utf8), parmtype = Array("parmtype".utf8)
        for entry in list where entry.keyBytes == parm || entry.keyBytes == parmtype {
            guard let colon = entry.valueBytes.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = entry.valueBytes[..<colon]
            let rest = entry.valueBytes[(colon + 1)...]
            var index = merged.firstIndex { $0.name == name }
            if index == nil {
                merged.append(Parameter(name: name))
                index = merged.count - 1
            }
            if entry.keyBytes == parm { merged[index!].description = rest } else { merged[index!].type = rest }
        }
        return merged.reversed()
    }

    private static func pad(_ label: String, into output: inout [UInt8]) {
        output.append(contentsOf: label.utf8)
        output.append(contentsOf: repeatElement(UInt8(ascii: " "), count: max(0, 16 - label.utf8.count)))
    }

    /// Exactly what `modinfo FILE` prints for this module; `filename` is the absolute path.
    public static func render(_ module: ModuleFile, filename: String, into output: inout [UInt8]) {
        pad("filename:", into: &output)
        output.append(contentsOf: filename.utf8)
        output.append(0x0A)
        let list = infoList(module)
        let parm = Array("parm".utf8), parmtype = Array("parmtype".utf8)
        for entry in list {
            if entry.keyBytes == parm || entry.keyBytes == parmtype { continue }
            output.append(contentsOf: entry.keyBytes)
            output.append(UInt8(ascii: ":"))
            // printf("%-*s", 15 - keylen, ""): a negative width also pads, by its magnitude.
            output.append(contentsOf: repeatElement(UInt8(ascii: " "), count: abs(15 - entry.keyBytes.count)))
            output.append(contentsOf: entry.valueBytes)
            output.append(0x0A)
        }
        for parameter in parameters(list) {
            pad("parm:", into: &output)
            appendParameter(parameter, bareTypeInParentheses: false, into: &output)
        }
    }

    /// One `name:description (type)` parameter line. modinfo differs in one case: a
    /// parameter with a type but no description prints the bare type in the full
    /// listing and ` (type)` under `-F parm`.
    private static func appendParameter(_ parameter: Parameter, bareTypeInParentheses: Bool, into output: inout [UInt8]) {
        output.append(contentsOf: parameter.name)
        output.append(UInt8(ascii: ":"))
        if let description = parameter.description {
            output.append(contentsOf: description)
            if let type = parameter.type {
                output.append(contentsOf: " (".utf8)
                output.append(contentsOf: type)
                output.append(UInt8(ascii: ")"))
            }
        } else if bareTypeInParentheses {
            output.append(contentsOf: " (".utf8)
            output.append(contentsOf: parameter.type ?? [])
            output.append(UInt8(ascii: ")"))
        } else if let type = parameter.type {
            output.append(contentsOf: type)
        }
        output.append(0x0A)
    }

    /// Exactly what `modinfo -F field FILE` prints.
    public static func renderField(_ field: String, module: ModuleFile, filename: String, into output: inout [UInt8]) {
        if field == "filename" {
            output.append(contentsOf: filename.utf8)
            output.append(0x0A)
            return
        }
        let list = infoList(module)
        if field == "parm" {
            for parameter in parameters(list) {
                appendParameter(parameter, bareTypeInParentheses: true, into: &output)
            }
            return
        }
        let wanted = Array(field.utf8)
        for entry in list where entry.keyBytes == wanted {
            output.append(contentsOf: entry.valueBytes)
            output.append(0x0A)
        }
    }
}
