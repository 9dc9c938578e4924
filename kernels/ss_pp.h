/* Preprocessor helpers shared by the nvcc and the emulated definitions of
 * SS_KERNEL: map a macro over a kernel's (type, name) parameter pairs. */
#ifndef SS_PP_H
#define SS_PP_H
#define SS_PP_NARGS(...) SS_PP_NARGS_(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define SS_PP_NARGS_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, n, ...) n
#define SS_PP_CAT(a, b) SS_PP_CAT_(a, b)
#define SS_PP_CAT_(a, b) a##b
#define SS_PP_MAP(f, sep, ...) SS_PP_CAT(SS_PP_MAP_, SS_PP_NARGS(__VA_ARGS__))(f, sep, __VA_ARGS__)
#define SS_PP_MAP_1(f, s, a) f a
#define SS_PP_MAP_2(f, s, a, ...) f a s() SS_PP_MAP_1(f, s, __VA_ARGS__)
#define SS_PP_MAP_3(f, s, a, ...) f a s() SS_PP_MAP_2(f, s, __VA_ARGS__)
#define SS_PP_MAP_4(f, s, a, ...) f a s() SS_PP_MAP_3(f, s, __VA_ARGS__)
#define SS_PP_MAP_5(f, s, a, ...) f a s() SS_PP_MAP_4(f, s, __VA_ARGS__)
#define SS_PP_MAP_6(f, s, a, ...) f a s() SS_PP_MAP_5(f, s, __VA_ARGS__)
#define SS_PP_MAP_7(f, s, a, ...) f a s() SS_PP_MAP_6(f, s, __VA_ARGS__)
#define SS_PP_MAP_8(f, s, a, ...) f a s() SS_PP_MAP_7(f, s, __VA_ARGS__)
#define SS_PP_MAP_9(f, s, a, ...) f a s() SS_PP_MAP_8(f, s, __VA_ARGS__)
#define SS_PP_MAP_10(f, s, a, ...) f a s() SS_PP_MAP_9(f, s, __VA_ARGS__)
#define SS_PP_MAP_11(f, s, a, ...) f a s() SS_PP_MAP_10(f, s, __VA_ARGS__)
#define SS_PP_MAP_12(f, s, a, ...) f a s() SS_PP_MAP_11(f, s, __VA_ARGS__)
#define SS_PP_MAP_13(f, s, a, ...) f a s() SS_PP_MAP_12(f, s, __VA_ARGS__)
#define SS_PP_MAP_14(f, s, a, ...) f a s() SS_PP_MAP_13(f, s, __VA_ARGS__)
#define SS_PP_MAP_15(f, s, a, ...) f a s() SS_PP_MAP_14(f, s, __VA_ARGS__)
#define SS_PP_MAP_16(f, s, a, ...) f a s() SS_PP_MAP_15(f, s, __VA_ARGS__)
#define SS_PP_COMMA() ,
#define SS_PP_NOSEP()
#define SS_PP_PARAM(T, n) T n
#define SS_PP_FIELD(T, n) T n;
#define SS_PP_NAME(T, n) n
#define SS_PP_MEMBER(T, n) a_->n

#endif
