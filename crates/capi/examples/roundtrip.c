/* roundtrip: libdaxfs from C. Makes a file system on an image file, writes
 * a file, clones it, reads the clone back and checks it, finds the shared
 * blocks in the fsmap, then injects a media error into the clone's data and
 * checks that the callback named the lost range and reads of it fail.
 *
 *   cc -I crates/capi/include crates/capi/examples/roundtrip.c \
 *      target/release/libdaxfs.a -lpthread -ldl -lm -o roundtrip
 *   ./roundtrip /tmp/roundtrip.img
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daxfs.h"

#define SIZE (64u * 4096u) /* 64 blocks: whole blocks, so clones share them */

static int failed(const char *what, long long rc)
{
    fprintf(stderr, "roundtrip: %s: %s (%lld): %s\n", what, strerror((int)-rc), rc,
            daxfs_last_error());
    return 1;
}

#define CHECK(what, call)                                                                          \
    do {                                                                                           \
        long long rc_ = (call);                                                                    \
        if (rc_ < 0)                                                                               \
            return failed(what, rc_);                                                              \
    } while (0)

struct seen {
    int calls;
    uint64_t ino, offset, length;
};

/* Runs on the thread that handles the report (here: the caller of
 * daxfs_inject_error). Only records what it is told. */
static void on_loss(void *ctx, uint64_t ino, uint64_t offset, uint64_t length, int action_required)
{
    struct seen *s = ctx;
    (void)action_required;
    s->calls++;
    s->ino = ino;
    s->offset = offset;
    s->length = length;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: roundtrip IMAGE\n");
        return 2;
    }
    const char *image = argv[1];
    struct daxfs_mkfs_options mk = {.flags = DAXFS_MKFS_FORCE, .label = "roundtrip"};
    CHECK("mkfs", daxfs_mkfs(image, 16u << 20, &mk));

    daxfs_fs *fs;
    CHECK("mount", daxfs_mount(image, 0, &fs));
    CHECK("mkdir", daxfs_mkdir(fs, "/data", 0755));

    /* Write a file with a pattern in every byte. */
    unsigned char *pattern = malloc(SIZE), *back = malloc(SIZE);
    if (!pattern || !back)
        return failed("malloc", -ENOMEM);
    for (unsigned i = 0; i < SIZE; i++)
        pattern[i] = (unsigned char)(i * 7 + i / 4096);
    daxfs_file *a, *b;
    CHECK("open a", daxfs_open(fs, "/data/a", O_RDWR | O_CREAT | O_EXCL, 0644, &a));
    long long n = daxfs_pwrite(a, pattern, SIZE, 0);
    CHECK("pwrite", n);
    if (n != SIZE) {
        fprintf(stderr, "roundtrip: short write: %lld\n", n);
        return 1;
    }
    CHECK("fsync", daxfs_fsync(a));

    /* Clone it and read the clone back. */
    CHECK("open b", daxfs_open(fs, "/data/b", O_RDWR | O_CREAT, 0644, &b));
    long long cloned = daxfs_clone(b, a);
    CHECK("clone", cloned);
    n = daxfs_pread(b, back, SIZE, 0);
    CHECK("pread", n);
    if (cloned != SIZE || n != SIZE || memcmp(pattern, back, SIZE) != 0) {
        fprintf(stderr, "roundtrip: the clone reads back wrong (cloned %lld, read %lld)\n", cloned,
                n);
        return 1;
    }

    /* Both files now own the same blocks: the fsmap says they are shared. */
    struct daxfs_stat st;
    CHECK("stat", daxfs_stat(fs, "/data/b", &st));
    /* Ask for the count first, then for the records. */
    uint64_t blocks = (16u << 20) / 4096;
    long long total = daxfs_owners(fs, 0, blocks, NULL, 0);
    CHECK("owners", total);
    struct daxfs_owner *owners = calloc((size_t)total + 1, sizeof *owners);
    if (!owners)
        return failed("calloc", -ENOMEM);
    CHECK("owners", daxfs_owners(fs, 0, blocks, owners, (size_t)total));
    uint64_t shared_at = 0;
    int found = 0;
    for (long long i = 0; i < total; i++)
        /* The record holding file offset 8192 of the clone. */
        if (owners[i].kind == DAXFS_OWNER_FILE && owners[i].ino == st.ino &&
            strcmp(owners[i].what, "data") == 0 && (owners[i].flags & DAXFS_OWNER_SHARED) &&
            owners[i].offset <= 8192 && 8192 < owners[i].offset + owners[i].length) {
            shared_at = owners[i].physical + (8192 - owners[i].offset);
            found = 1;
        }
    if (!found) {
        fprintf(stderr, "roundtrip: no shared data record of inode %llu in the fsmap\n",
                (unsigned long long)st.ino);
        return 1;
    }

    /* Directory listing. */
    struct daxfs_dirent ents[8];
    long long ne = daxfs_readdir(fs, "/data", 0, ents, 8);
    CHECK("readdir", ne);
    if (ne != 2) {
        fprintf(stderr, "roundtrip: /data lists %lld entries, not 2\n", ne);
        return 1;
    }

    /* A media error in the third block of the shared data: both files lose
     * it; the clone's callback is told which bytes. */
    struct seen seen = {0};
    CHECK("on_media_error", daxfs_on_media_error(b, on_loss, &seen));
    CHECK("inject", daxfs_inject_error(fs, shared_at, 4096));
    if (seen.calls != 1 || seen.ino != st.ino || seen.offset != 8192 || seen.length != 4096) {
        fprintf(stderr, "roundtrip: callback: %d calls, ino %llu, offset %llu, length %llu\n",
                seen.calls, (unsigned long long)seen.ino, (unsigned long long)seen.offset,
                (unsigned long long)seen.length);
        return 1;
    }
    n = daxfs_pread(b, back, 4096, 8192);
    if (n != -EIO) {
        fprintf(stderr, "roundtrip: reading the lost block gave %lld, not -EIO\n", n);
        return 1;
    }
    n = daxfs_pread(b, back, 4096, 0);
    if (n != 4096 || memcmp(back, pattern, 4096) != 0) {
        fprintf(stderr, "roundtrip: the block before the loss reads back wrong\n");
        return 1;
    }

    /* Errors are negative errnos. */
    daxfs_file *none;
    n = daxfs_open(fs, "/data/missing", O_RDONLY, 0, &none);
    if (n != -ENOENT) {
        fprintf(stderr, "roundtrip: opening a missing file gave %lld, not -ENOENT\n", n);
        return 1;
    }

    CHECK("close a", daxfs_close(a));
    CHECK("close b", daxfs_close(b));
    CHECK("unmount", daxfs_unmount(fs));
    free(owners);
    free(pattern);
    free(back);
    printf("roundtrip: ok\n");
    return 0;
}
