/* Kiln's C API end to end: open a model, size and check the arena, classify, and hit every error path.
 * Usage: classify MODEL.kiln. Exits 0 when every check passes. Built and run under valgrind by
 * crates/kiln-capi/tests/c_example.rs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

static int failures = 0;

#define EXPECT(cond)                                                                     \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "FAILED line %d: %s (last error: %s)\n", __LINE__, #cond, \
                    kiln_last_error());                                                  \
            failures++;                                                                  \
        }                                                                                \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.kiln\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc((size_t)size);
    if (fread(bytes, 1, (size_t)size, f) != (size_t)size) {
        perror("read");
        return 2;
    }
    fclose(f);

    KilnModel *model = NULL;
    EXPECT(kiln_model_open(NULL, 10, &model) == KILN_STATUS_NULL_POINTER);
    EXPECT(strlen(kiln_last_error()) > 0);
    EXPECT(kiln_model_open(bytes, (size_t)size - 1, &model) == KILN_STATUS_INVALID_MODEL);
    EXPECT(strstr(kiln_last_error(), "truncated") != NULL);
    EXPECT(kiln_model_open(bytes, (size_t)size, &model) == KILN_STATUS_OK);
    EXPECT(strlen(kiln_last_error()) == 0);

    size_t input_len = kiln_input_len(model), classes = kiln_classes(model);
    size_t arena_len = kiln_arena_size(model, 2);
    EXPECT(input_len > 0 && classes > 0 && arena_len > 0);
    EXPECT(kiln_arena_size(NULL, 2) == 0);
    printf("input %zu values, %zu classes, arena %zu bytes at batch 2\n", input_len, classes, arena_len);

    /* The arena: 4-byte aligned from malloc; one byte short, and one byte off alignment, are errors. */
    uint8_t *arena = malloc(arena_len + 4);
    KilnSession *session = NULL;
    EXPECT(kiln_session_new(model, arena, arena_len - 1, 2, &session) == KILN_STATUS_ARENA_TOO_SMALL);
    EXPECT(strstr(kiln_last_error(), "arena") != NULL);
    EXPECT(kiln_session_new(model, arena + 1, arena_len, 2, &session) == KILN_STATUS_ARENA_MISALIGNED);
    EXPECT(kiln_session_new(model, arena, arena_len, 0, &session) == KILN_STATUS_BAD_BATCH);
    EXPECT(kiln_session_new(NULL, arena, arena_len, 2, &session) == KILN_STATUS_NULL_POINTER);
    EXPECT(kiln_session_new(model, arena, arena_len, 2, &session) == KILN_STATUS_OK);

    uint8_t *pixels = malloc(2 * input_len);
    for (size_t i = 0; i < 2 * input_len; i++) pixels[i] = (uint8_t)(i * 37 % 256);
    float probabilities[64];
    EXPECT(kiln_run_pixels(session, pixels, 2 * input_len, 2, probabilities, 64) == KILN_STATUS_OK);
    for (size_t image = 0; image < 2; image++) {
        float sum = 0;
        size_t best = 0;
        for (size_t c = 0; c < classes; c++) {
            sum += probabilities[image * classes + c];
            if (probabilities[image * classes + c] > probabilities[image * classes + best]) best = c;
        }
        EXPECT(sum > 0.999f && sum < 1.001f);
        printf("image %zu: class %zu (%.3f)\n", image, best, probabilities[image * classes + best]);
    }

    /* Two threads: the same probabilities, bit for bit; 0 threads is refused. */
    float threaded[64];
    EXPECT(kiln_session_set_threads(session, 2) == KILN_STATUS_OK);
    EXPECT(kiln_run_pixels(session, pixels, 2 * input_len, 2, threaded, 64) == KILN_STATUS_OK);
    EXPECT(memcmp(threaded, probabilities, 2 * classes * sizeof(float)) == 0);
    EXPECT(kiln_session_set_threads(session, 0) == KILN_STATUS_BAD_THREADS);
    EXPECT(strlen(kiln_last_error()) > 0);
    EXPECT(kiln_session_set_threads(NULL, 2) == KILN_STATUS_NULL_POINTER);
    EXPECT(kiln_session_set_threads(session, 1) == KILN_STATUS_OK);

    /* Bad runs: status codes with messages, and the session still works afterwards. */
    EXPECT(kiln_run_pixels(session, pixels, input_len - 1, 1, probabilities, 64) == KILN_STATUS_BAD_INPUT);
    EXPECT(kiln_run_pixels(session, pixels, 2 * input_len, 3, probabilities, 64) == KILN_STATUS_BAD_BATCH);
    EXPECT(kiln_run_pixels(session, pixels, input_len, 1, probabilities, classes - 1) == KILN_STATUS_BUFFER_TOO_SMALL);
    EXPECT(kiln_run_pixels(NULL, pixels, input_len, 1, probabilities, 64) == KILN_STATUS_NULL_POINTER);
    EXPECT(kiln_run_pixels(session, NULL, input_len, 1, probabilities, 64) == KILN_STATUS_NULL_POINTER);
    float *floats = malloc(input_len * sizeof(float));
    for (size_t i = 0; i < input_len; i++) floats[i] = pixels[i] / 255.0f;
    float again[64];
    EXPECT(kiln_run(session, floats, input_len, 1, again, 64) == KILN_STATUS_OK);
    EXPECT(memcmp(again, probabilities, classes * sizeof(float)) == 0);
    floats[3] = 0.0f / 0.0f;
    EXPECT(kiln_run(session, floats, input_len, 1, again, 64) == KILN_STATUS_BAD_INPUT);
    EXPECT(strstr(kiln_last_error(), "NaN") != NULL);

    kiln_session_free(session);
    kiln_session_free(NULL);
    kiln_model_free(model);
    kiln_model_free(NULL);
    free(floats);
    free(pixels);
    free(arena);
    free(bytes);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
