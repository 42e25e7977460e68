extension SymbolExport {
    /// For readers outside KernelTree that describe an export the way Module.symvers
    /// does (a module file's own exports, a kernel model's table). The labels are in
    /// another order than the synthesized initializer's, which is internal.
    public init(symbol: String, module: String, crc: UInt32, exportType: String = "", namespace: String? = nil) {
        self.crc = crc
        self.symbol = symbol
        self.module = module
        self.exportType = exportType
        self.namespace = namespace
    }
}
