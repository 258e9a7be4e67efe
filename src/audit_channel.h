/* audit_channel.h: the memory shared by the loader auditor and libpqdedup.so.
 *
 * libpqdedup.so defines one exported object, PQDEDUP_CHANNEL_SYM. The auditor
 * (libpqdedup-audit.so, loaded through LD_AUDIT into its own link namespace, without libc)
 * recognises libpqdedup.so as the object that defines it, so it needs no file names, and
 * talks to it only through this struct:
 *   - the auditor writes `attached` and `lav` when it finds the struct, and appends notes,
 *     since it cannot log by itself;
 *   - libpqdedup.so's constructor answers in `state` whether bindings may be sent to its
 *     wrappers (PQDEDUP_AUDIT, PQDEDUP_DISABLE, the glibc version), and logs the notes later
 *     with pqdedup's own logger (gotsweep.c).
 * Until `state` says PQDEDUP_AUDIT_ON the auditor sends nothing anywhere.
 * Freestanding: included by the auditor without libc. */
#ifndef PQDEDUP_AUDIT_CHANNEL_H
#define PQDEDUP_AUDIT_CHANNEL_H

#define PQDEDUP_CHANNEL_SYM "pqdedup_audit_channel"
/* Bumped whenever anything after the header changes. */
#define PQDEDUP_CHANNEL_LAYOUT 0x70710001u

#define PQDEDUP_CHANNEL_NOTES 32
#define PQDEDUP_CHANNEL_NOTE_LEN 160

/* What libpqdedup.so tells the auditor (the `state` field). */
enum pqdedup_audit_state {
    PQDEDUP_AUDIT_UNDECIDED = 0, /* its constructor has not run yet: send nothing */
    PQDEDUP_AUDIT_ON = 1,        /* send bindings of wrapped names to the wrappers */
    PQDEDUP_AUDIT_OFF = 2,       /* send nothing (the reason is logged by libpqdedup.so) */
};

/* How much a note matters: libpqdedup.so logs it at the matching PQDEDUP_LOG level. */
enum pqdedup_note_level { PQDEDUP_NOTE_DEBUG = 0, PQDEDUP_NOTE_INFO = 1, PQDEDUP_NOTE_WARN = 2 };

struct pqdedup_audit_note {
    unsigned seq;   /* index + 1 once `text` is complete; the reader checks it */
    unsigned level; /* enum pqdedup_note_level */
    char text[PQDEDUP_CHANNEL_NOTE_LEN];
};

struct pqdedup_audit_channel {
    /* Header: the same in every version, so each side can tell the other is different. */
    unsigned layout;   /* libpqdedup.so: PQDEDUP_CHANNEL_LAYOUT (static initializer) */
    unsigned attached; /* auditor: its own PQDEDUP_CHANNEL_LAYOUT once it found this struct */
    /* The rest is used only when both sides have the same layout. */
    unsigned lav;       /* auditor: the version la_version received (2 from glibc 2.35 on) */
    unsigned state;     /* libpqdedup.so: enum pqdedup_audit_state */
    unsigned redirects; /* auditor: bindings sent to a wrapper */
    unsigned nnotes;    /* auditor: notes written so far, a ring of PQDEDUP_CHANNEL_NOTES */
    struct pqdedup_audit_note notes[PQDEDUP_CHANNEL_NOTES];
};

#endif
