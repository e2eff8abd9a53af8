/*
 * bsdiff-sa OLD NEW PATCH: writes the same patch as bsdiff 4.3, with the suffix array built by
 * libdivsufsort instead of bsdiff's own qsufsort.
 *
 * Why this exists: Debian's bsdiff 4.3 sorts suffixes with qsufsort, which on a root file system
 * image with long runs of zero blocks ran for hours on this project's machine. A suffix array is
 * unique (suffixes are distinct strings, so their sorted order is fixed), and bsdiff's matching and
 * output depend only on that order, so any correct sort gives bsdiff's patch byte for byte.
 * scripts/delta-bench.sh checks that on every pair where Debian's bsdiff finishes, and applies the
 * result with Debian's bspatch. This is a benchmark helper, not part of wardswarm.
 *
 * The patch format (BSDIFF40): a 32-byte header ("BSDIFF40", control length, diff length, new
 * size, each a sign-magnitude little-endian 64-bit integer), then three bzip2 streams: control
 * triples (add length, copy length, seek), add bytes (new minus old), copy bytes.
 *
 * With BSDIFF_SA_PROGRESS set, prints every 10 s how far the scan is (stderr): bsdiff's scan re-searches
 * at every byte of a long zero run when the previous match's offset almost fits, and each search
 * compares the whole run, so the scan is quadratic in the run's length.
 *
 * Build: cc -O2 -o bsdiff-sa bsdiff-sa.c -ldivsufsort -lbz2  (Debian: libdivsufsort-dev, libbz2-dev)
 */
#include <bzlib.h>
#include <divsufsort.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bsdiff-sa: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static uint8_t *read_all(const char *path, int64_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0)
        die(path, strerror(errno));
    if (st.st_size >= INT32_MAX)
        die(path, "larger than 2 GiB (the suffix array is 32-bit)");
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        die("out of memory", path);
    if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        die(path, "short read");
    fclose(f);
    *len = st.st_size;
    return buf;
}

/* Sign-magnitude little-endian, as bsdiff writes its integers. */
static void put_i64(int64_t x, uint8_t *out)
{
    uint64_t y = x < 0 ? (uint64_t)(-x) : (uint64_t)x;
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(y >> (8 * i));
    if (x < 0)
        out[7] |= 0x80;
}

static int64_t common_prefix(const uint8_t *a, int64_t alen, const uint8_t *b, int64_t blen)
{
    int64_t i = 0;
    while (i < alen && i < blen && a[i] == b[i])
        i++;
    return i;
}

/* Binary search of the sorted suffixes sa[lo..=hi] for the longest match of `target`. */
static int64_t longest_match(const int32_t *sa, const uint8_t *old, int64_t oldlen, const uint8_t *target,
                             int64_t tlen, int64_t lo, int64_t hi, int64_t *at)
{
    while (hi - lo >= 2) {
        int64_t mid = lo + (hi - lo) / 2;
        int64_t n = oldlen - sa[mid] < tlen ? oldlen - sa[mid] : tlen;
        if (memcmp(old + sa[mid], target, (size_t)n) < 0)
            lo = mid;
        else
            hi = mid;
    }
    int64_t x = common_prefix(old + sa[lo], oldlen - sa[lo], target, tlen);
    int64_t y = common_prefix(old + sa[hi], oldlen - sa[hi], target, tlen);
    if (x > y) {
        *at = sa[lo];
        return x;
    }
    *at = sa[hi];
    return y;
}

static BZFILE *bz_open(FILE *f)
{
    int err;
    BZFILE *bz = BZ2_bzWriteOpen(&err, f, 9, 0, 0);
    if (!bz)
        die("bzip2 open failed", NULL);
    return bz;
}

static void bz_write(BZFILE *bz, void *buf, int64_t len)
{
    int err;
    while (len > 0) {
        int n = len > (1 << 30) ? (1 << 30) : (int)len;
        BZ2_bzWrite(&err, bz, buf, n);
        if (err != BZ_OK)
            die("bzip2 write failed", NULL);
        buf = (uint8_t *)buf + n;
        len -= n;
    }
}

static void bz_close(BZFILE *bz)
{
    int err;
    BZ2_bzWriteClose(&err, bz, 0, NULL, NULL);
    if (err != BZ_OK)
        die("bzip2 close failed", NULL);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        die("usage: bsdiff-sa OLD NEW PATCH", NULL);
    int64_t oldlen, newlen;
    uint8_t *old = read_all(argv[1], &oldlen);
    uint8_t *new = read_all(argv[2], &newlen);

    /* bsdiff's array has the empty suffix first (it sorts before every other), then the rest. */
    int32_t *sa = malloc(((size_t)oldlen + 1) * sizeof(int32_t));
    if (!sa)
        die("out of memory", "suffix array");
    sa[0] = (int32_t)oldlen;
    if (oldlen > 0 && divsufsort(old, sa + 1, (saidx_t)oldlen) != 0)
        die("divsufsort failed", NULL);

    uint8_t *add = malloc((size_t)newlen + 1), *copy = malloc((size_t)newlen + 1);
    if (!add || !copy)
        die("out of memory", "output buffers");
    int64_t addlen = 0, copylen = 0;

    FILE *out = fopen(argv[3], "wb");
    if (!out)
        die(argv[3], strerror(errno));
    uint8_t header[32] = {0};
    if (fwrite(header, 32, 1, out) != 1)
        die(argv[3], "write failed");
    BZFILE *ctrl = bz_open(out);

    int progress = getenv("BSDIFF_SA_PROGRESS") != NULL;
    time_t started = time(NULL), reported = started;
    uint64_t searches = 0;
    int64_t scan = 0, len = 0, pos = 0, lastscan = 0, lastpos = 0, lastoffset = 0;
    while (scan < newlen) {
        int64_t oldscore = 0, scsc;
        for (scsc = scan += len; scan < newlen; scan++) {
            len = longest_match(sa, old, oldlen, new + scan, newlen - scan, 0, oldlen, &pos);
            if (progress && (++searches & 255) == 0 && time(NULL) - reported >= 10) {
                reported = time(NULL);
                fprintf(stderr, "%lds: scan at %ld of %ld, %lu searches, last match %ld bytes\n",
                        (long)(reported - started), (long)scan, (long)newlen, (unsigned long)searches, (long)len);
            }
            for (; scsc < scan + len; scsc++)
                if (scsc + lastoffset < oldlen && old[scsc + lastoffset] == new[scsc])
                    oldscore++;
            if ((len == oldscore && len != 0) || len > oldscore + 8)
                break;
            if (scan + lastoffset < oldlen && old[scan + lastoffset] == new[scan])
                oldscore--;
        }
        if (len == oldscore && scan != newlen)
            continue;

        /* Extend the previous match forwards and this one backwards while at least half agrees. */
        int64_t s = 0, best = 0, lenf = 0;
        for (int64_t i = 0; lastscan + i < scan && lastpos + i < oldlen;) {
            if (old[lastpos + i] == new[lastscan + i])
                s++;
            i++;
            if (s * 2 - i > best * 2 - lenf) {
                best = s;
                lenf = i;
            }
        }
        int64_t lenb = 0;
        if (scan < newlen) {
            s = 0;
            best = 0;
            for (int64_t i = 1; scan >= lastscan + i && pos >= i; i++) {
                if (old[pos - i] == new[scan - i])
                    s++;
                if (s * 2 - i > best * 2 - lenb) {
                    best = s;
                    lenb = i;
                }
            }
        }
        /* The two extensions overlap: split where the forward one stops paying. */
        if (lastscan + lenf > scan - lenb) {
            int64_t overlap = (lastscan + lenf) - (scan - lenb), split = 0;
            s = 0;
            best = 0;
            for (int64_t i = 0; i < overlap; i++) {
                if (new[lastscan + lenf - overlap + i] == old[lastpos + lenf - overlap + i])
                    s++;
                if (new[scan - lenb + i] == old[pos - lenb + i])
                    s--;
                if (s > best) {
                    best = s;
                    split = i + 1;
                }
            }
            lenf += split - overlap;
            lenb -= split;
        }

        for (int64_t i = 0; i < lenf; i++)
            add[addlen + i] = (uint8_t)(new[lastscan + i] - old[lastpos + i]);
        int64_t extra = (scan - lenb) - (lastscan + lenf);
        memcpy(copy + copylen, new + lastscan + lenf, (size_t)extra);
        addlen += lenf;
        copylen += extra;

        uint8_t triple[24];
        put_i64(lenf, triple);
        put_i64(extra, triple + 8);
        put_i64((pos - lenb) - (lastpos + lenf), triple + 16);
        bz_write(ctrl, triple, 24);

        lastscan = scan - lenb;
        lastpos = pos - lenb;
        lastoffset = pos - scan;
    }
    bz_close(ctrl);
    int64_t ctrl_end = ftello(out);
    BZFILE *b = bz_open(out);
    bz_write(b, add, addlen);
    bz_close(b);
    int64_t add_end = ftello(out);
    b = bz_open(out);
    bz_write(b, copy, copylen);
    bz_close(b);

    memcpy(header, "BSDIFF40", 8);
    put_i64(ctrl_end - 32, header + 8);
    put_i64(add_end - ctrl_end, header + 16);
    put_i64(newlen, header + 24);
    if (fseeko(out, 0, SEEK_SET) != 0 || fwrite(header, 32, 1, out) != 1 || fclose(out) != 0)
        die(argv[3], "write failed");
    return 0;
}
