/* noop_audit.c: an rtld auditor that audits nothing, to show the launcher keeps LD_AUDIT entries after its own. */
unsigned int la_version(unsigned int version);
unsigned int la_version(unsigned int version)
{
    return version;
}
