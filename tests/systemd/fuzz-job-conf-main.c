/* Runs the fuzz target over a seed corpus directory and then over
 * deterministic mutations of the seeds (bytes flipped, replaced by
 * characters the parser treats specially, inserted, deleted), so that the
 * target is exercised by every build, not only by clang's libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 64
#define MAX_LEN   8192
#define ROUNDS    20000

static uint32_t rnd_state = 0x12345678;
static uint32_t rnd(void) {
        rnd_state ^= rnd_state << 13;
        rnd_state ^= rnd_state >> 17;
        rnd_state ^= rnd_state << 5;
        return rnd_state;
}

int main(int argc, char *argv[]) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
                return 64;
        }
        static uint8_t seeds[MAX_SEEDS][MAX_LEN];
        size_t lens[MAX_SEEDS], n = 0;
        DIR *d = opendir(argv[1]);
        if (!d) {
                perror(argv[1]);
                return 1;
        }
        struct dirent *de;
        while ((de = readdir(d)) && n < MAX_SEEDS) {
                if (de->d_name[0] == '.')
                        continue;
                char p[4096];
                snprintf(p, sizeof p, "%s/%s", argv[1], de->d_name);
                FILE *f = fopen(p, "rb");
                if (!f)
                        continue;
                lens[n] = fread(seeds[n], 1, MAX_LEN, f);
                fclose(f);
                LLVMFuzzerTestOneInput(seeds[n], lens[n]);
                n++;
        }
        closedir(d);
        if (n == 0) {
                fprintf(stderr, "no seeds in %s\n", argv[1]);
                return 1;
        }
        static const char special[] = "'\"\\$`*?[]|&;<>()~# \t\n\r=\x01\x7f\xc3\xa9\0";
        static uint8_t buf[MAX_LEN + 64];
        for (int round = 0; round < ROUNDS; round++) {
                size_t s = rnd() % n, len = lens[s];
                memcpy(buf, seeds[s], len);
                int edits = 1 + (int) (rnd() % 4);
                for (int e = 0; e < edits; e++) {
                        size_t pos = len ? rnd() % len : 0;
                        uint8_t ch = (uint8_t) special[rnd() % (sizeof special)];
                        switch (rnd() % 4) {
                        case 0:
                                if (len)
                                        buf[pos] ^= (uint8_t) (1u << (rnd() % 8));
                                break;
                        case 1:
                                if (len)
                                        buf[pos] = ch;
                                break;
                        case 2:
                                if (len < MAX_LEN) {
                                        memmove(buf + pos + 1, buf + pos, len - pos);
                                        buf[pos] = ch;
                                        len++;
                                }
                                break;
                        default:
                                if (len) {
                                        memmove(buf + pos, buf + pos + 1, len - pos - 1);
                                        len--;
                                }
                        }
                }
                LLVMFuzzerTestOneInput(buf, len);
        }
        printf("%zu seeds, %d mutations: no failure\n", n, ROUNDS);
        return 0;
}
