import CKmod
import Foundation
import NVBuildSupport

/// `print_action` of libkmod's dry run: record what modprobe would print.
private func recordAction(_ module: OpaquePointer?, _ install: Bool, _ options: UnsafePointer<CChar>?) {
    guard let module else { return }
    let name = String(cString: kmod_module_get_name(module))
    let optionText = options.map { String(cString: $0) } ?? ""
    let action: DependencyListing.Action
    if install {
        let command = kmod_module_get_install_commands(module).map { String(cString: $0) } ?? ""
        action = .init(kind: .install, module: name, path: nil, options: optionText, command: command)
    } else if let path = kmod_module_get_path(module) {
        action = .init(kind: .insmod, module: name, path: String(cString: path), options: optionText, command: nil)
    } else if kmod_module_get_initstate(module) == Int32(KMOD_MODULE_BUILTIN.rawValue) {
        action = .init(kind: .builtin, module: name, path: nil, options: nil, command: nil)
    } else {
        // An alias without a module file: modprobe prints nothing for it.
        return
    }
    ModuleTree.collectedActions.withLock { $0.append(action) }
}

extension ModuleTree {
    /// The flags `modprobe --show-depends` passes: a dry run that ignores what
    /// the host has loaded (the host is not the target).
    static let showDependsFlags: Int32 =
        Int32(KMOD_PROBE_DRY_RUN.rawValue | KMOD_PROBE_IGNORE_LOADED.rawValue | KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY.rawValue)

    /// What `modprobe --show-depends -S <release> <argument>` prints, for each argument.
    /// Arguments are module names, aliases, or paths of module files; a path
    /// joins the graph with the `depends` of its modinfo, resolved first
    /// against the other paths given, then against the tree.
    public func dependencyListings(for arguments: [String]) -> [DependencyListing] {
        var pathModules: [String: String] = [:]  // module name -> path
        for argument in arguments where Self.isModulePath(argument) {
            if let name = moduleName(ofFile: argument) { pathModules[name] = argument }
        }
        return arguments.map { argument in
            _ = log.take()  // lines of earlier calls belong to no listing
            var listing: DependencyListing
            if Self.isModulePath(argument) {
                listing = DependencyListing(argument: argument, actions: [], error: nil)
                var visiting: Set<String> = []
                listPath(argument, pathModules: pathModules, into: &listing, visiting: &visiting)
            } else {
                listing = self.listing(forLookup: argument)
            }
            for line in log.take() {
                let (diagnostic, fatal) = Self.diagnostic(libkmod: line, moduleDirectory: moduleDirectory)
                if !listing.diagnostics.contains(diagnostic) { listing.diagnostics.append(diagnostic) }
                if fatal, listing.error == nil { listing.error = diagnostic.locationPrefix + diagnostic.message + diagnostic.remedySuffix }
            }
            return listing
        }
    }

    /// One libkmod log line as a diagnostic; fatal when it means the listing is incomplete.
    /// A dependency whose file is missing is one: libkmod then drops every dependency of
    /// the module (modprobe prints the ERROR and exits 0 with the shorter order).
    static func diagnostic(libkmod line: LibkmodLog.Line, moduleDirectory: String) -> (Diagnostic, fatal: Bool) {
        var message = Substring(line.message)
        // "ctx=0x55f7…" is a pointer, meaningless to a reader.
        if message.hasPrefix("ctx="), let space = message.firstIndex(of: " ") { message = message[message.index(after: space)...] }
        if line.function == "kmod_module_parse_depline", message.hasPrefix("path="), let error = message.range(of: " error=") {
            let path = message[message.index(message.startIndex, offsetBy: 5)..<error.lowerBound]
            let reason = message[error.upperBound...]
            return (
                .error(
                    "\(reason.lowercased()), but \(moduleDirectory)/modules.dep names it as a dependency", file: String(path),
                    remedy: "reinstall the package that ships it, or rewrite modules.dep with \(ModuleIndex.depmodCommand(moduleDirectory))"),
                true
            )
        }
        return (.warning("libkmod: \(message)"), false)
    }

    /// libkmod opens a path for a blocking read, which never returns on a FIFO: stat it first.
    static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// Arguments that are paths must name readable regular files: unreadable input is an
    /// environment error (exit 2), found before libkmod opens anything. Stat first, so a
    /// FIFO is never opened.
    public static func checkReadablePaths(_ arguments: [String]) throws(UserError) {
        for argument in arguments where isModulePath(argument) {
            var info = stat()
            if stat(argument, &info) != 0 {
                throw UserError(.environment, "\(argument): cannot read the module file: \(String(cString: strerror(errno))); check the path")
            }
            if (info.st_mode & S_IFMT) != S_IFREG {
                throw UserError(.environment, "\(argument): not a regular file; pass a .ko, .ko.xz, .ko.zst or .ko.gz file")
            }
            if access(argument, R_OK) != 0 {
                throw UserError(.environment, "\(argument): cannot read the module file: \(String(cString: strerror(errno))); check its permissions")
            }
        }
    }

    static func isModulePath(_ argument: String) -> Bool {
        argument.contains("/") || argument.hasSuffix(".ko") || argument.hasSuffix(".ko.xz")
            || argument.hasSuffix(".ko.zst") || argument.hasSuffix(".ko.gz")
    }

    private func listing(forLookup argument: String) -> DependencyListing {
        var list: OpaquePointer?
        let status = kmod_module_new_from_lookup(context, argument, &list)
        guard status >= 0, let list else {
            return DependencyListing(
                argument: argument, actions: [],
                error: "Module \(argument) not found in directory \(moduleDirectory)")
        }
        defer { kmod_module_unref_list(list) }
        var actions: [DependencyListing.Action] = []
        var entry: OpaquePointer? = list
        while let current = entry {
            if let module = kmod_module_get_module(current) {
                actions += dryRun(module)
                kmod_module_unref(module)
            }
            entry = kmod_list_next(list, current)
        }
        return DependencyListing(argument: argument, actions: actions, error: nil)
    }

    private func listPath(
        _ path: String, pathModules: [String: String], into listing: inout DependencyListing, visiting: inout Set<String>
    ) {
        guard Self.isRegularFile(path) else {
            listing.error = "\(path): not a regular file; pass a .ko, .ko.xz, .ko.zst or .ko.gz file"
            return
        }
        var module: OpaquePointer?
        guard kmod_module_new_from_path(context, path, &module) >= 0, let module else {
            listing.error = "\(path): not a readable kernel module"
            return
        }
        defer { kmod_module_unref(module) }
        // modprobe refuses a path whose file libkmod cannot read as a module (empty, not ELF,
        // truncated: "Module PATH not found", exit 1) rather than listing an insmod of it.
        var info: OpaquePointer?
        guard kmod_module_get_info(module, &info) >= 0 else {
            listing.error = "\(path): not a readable kernel module (modprobe reports it as not found in \(moduleDirectory))"
            return
        }
        kmod_module_info_free_list(info)
        let name = String(cString: kmod_module_get_name(module))
        guard visiting.insert(name).inserted else { return }
        for dependency in modinfoValues(module, key: "depends").flatMap({ $0.split(separator: ",").map(String.init) }) {
            let normalized = dependency.replacingOccurrences(of: "-", with: "_")
            if listing.actions.contains(where: { $0.module == normalized }) { continue }
            if let dependencyPath = pathModules[normalized] {
                listPath(dependencyPath, pathModules: pathModules, into: &listing, visiting: &visiting)
            } else {
                let sub = self.listing(forLookup: dependency)
                if let error = sub.error, listing.error == nil { listing.error = error }
                for action in sub.actions where !listing.actions.contains(action) { listing.actions.append(action) }
            }
        }
        // The dry run lists the module's own dependencies again: keep each action once.
        for action in dryRun(module) where !listing.actions.contains(action) { listing.actions.append(action) }
    }

    private func dryRun(_ module: OpaquePointer) -> [DependencyListing.Action] {
        Self.dryRunTurn.withLock { _ in
            Self.collectedActions.withLock { $0.removeAll() }
            _ = kmod_module_probe_insert_module(module, UInt32(Self.showDependsFlags), nil, nil, nil, recordAction)
            return Self.collectedActions.withLock { actions in
                defer { actions.removeAll() }
                return actions
            }
        }
    }

    /// The module name libkmod gives a file (basename, `-` as `_`).
    public func moduleName(ofFile path: String) -> String? {
        var module: OpaquePointer?
        guard Self.isRegularFile(path), kmod_module_new_from_path(context, path, &module) >= 0, let module else { return nil }
        defer { kmod_module_unref(module) }
        return String(cString: kmod_module_get_name(module))
    }

    func modinfoValues(_ module: OpaquePointer, key: String) -> [String] {
        var list: OpaquePointer?
        guard kmod_module_get_info(module, &list) >= 0, let list else { return [] }
        defer { kmod_module_info_free_list(list) }
        var values: [String] = []
        var entry: OpaquePointer? = list
        while let current = entry {
            if String(cString: kmod_module_info_get_key(current)) == key,
                let value = kmod_module_info_get_value(current)
            {
                values.append(String(cString: value))
            }
            entry = kmod_list_next(list, current)
        }
        return values
    }
}
