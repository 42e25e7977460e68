/* The fixture's OS-agnostic core: plain C with no kernel header, as NVIDIA's
 * resource manager is; the module calls into it through one function. */
unsigned long nvcore_checksum(const unsigned char *bytes, unsigned long count);

unsigned long nvcore_checksum(const unsigned char *bytes, unsigned long count)
{
    unsigned long sum = 0x811c9dc5UL;
    unsigned long i;

    for (i = 0; i < count; i++)
        sum = (sum ^ bytes[i]) * 0x01000193UL;
    return sum;
}
