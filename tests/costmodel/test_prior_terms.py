"""Cost terms a primitive family declares beside its code (``CostTerms``) price it in the prior.

Two guarantees: moving the per-family terms out of ``costmodel/prior.py`` into the primitive
modules changed no prediction (pinned below, computed from the prior before the move; a full-grid
comparison of 351k rows over every board was bit-identical), and a new family needs nothing but
its own module: the toy family here registers, is priced by its terms and becomes a candidate,
touching no other module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from edgedeploy.boards.catalog import list_targets, load_target
from edgedeploy.costmodel import CoreConfig, CostModel
from edgedeploy.costmodel.configs import CF, config_matrix
from edgedeploy.costmodel.features import descriptor_matrix, key_table, primitive_key
from edgedeploy.costmodel.model import candidates
from edgedeploy.costmodel.prior import BASE_US, CALL_US, prior_ms
from edgedeploy.costmodel.shapes import conv_descriptor
from edgedeploy.runtime import ir, primitives
from edgedeploy.runtime.primitives.registry import (
    Columns,
    CostTerms,
    Primitive,
    family_cost,
    register,
    unregister,
)

INF = float("inf")
DESCS = {
    "conv3x3": conv_descriptor(64, 64, 56, 3),
    "conv1x1_s2_n2": conv_descriptor(64, 128, 56, 1, stride=2, n=2),
    "depthwise3x3": conv_descriptor(96, 96, 28, 3, groups=96),
    "stem7x7_s2": conv_descriptor(3, 64, 224, 7, stride=2),
    "conv5x5_odd": conv_descriptor(32, 48, 17, 5),
    "dense": ir.Descriptor(ir.DENSE, 1, 2048, 1, 1, 1000, 1, 1, elems_in=2048, elems_out=1000),
}
#: The key order fitted corrections were learned with; these columns must never move.
KEYS = (
    'direct/nchw', 'direct/nhwc', 'im2col_gemm/nchw', 'im2col_gemm/nhwc', 'gemm_1x1/nchw',
    'gemm_1x1/nhwc', 'winograd_f2x3/nchw', 'winograd_f2x3/nhwc', 'winograd_f4x3/nchw',
    'winograd_f4x3/nhwc', 'fft/nchw', 'fft/nhwc', 'depthwise/nchw', 'depthwise/nhwc',
    'onnxruntime', 'native', 'litert',
)

#: prior_ms of every key (KEYS order) per board configuration and descriptor, computed from the
#: prior before the terms moved into the primitive modules, and computed again whenever a formula
#: changed on purpose (``prior.PRIOR_VERSION``): last for the GEMM's rows split among threads and
#: one shape constant for rows and columns (``features.SHAPE_X0``).
PINNED = {
    ('hikey970', 'big:4'): {
        'conv3x3': (
            13.22608514, 11.11194818, 9.418603121, 7.924207621, 8.553334785, 6.800297714,
            6.541622354, 6.868703472, 3.93038442, 4.126903641, 11.66099078, 12.24404032,
            2.548016935, 2.675417782, 6.07940254, 0.07951001976, 6.07940254,
        ),
        'conv1x1_s2_n2': (
            1.104932133, 1.015624509, 1.158763276, 1.103123116, 1.067017298, 1.006789839,
            6.266926334, 6.58027265, 3.934828112, 4.131569517, 32.59650406, 34.22632926,
            0.5394682472, 0.5664416596, 0.7238868755, 0.2777781541, 0.7238868755,
        ),
        'depthwise3x3': (
            12.21551905, 4.337347856, 2.548233216, 1.275792041, 8.868254506, 2.641780186,
            3.324281118, 3.490495174, 2.124921253, 2.231167316, 4.107961772, 4.31335986,
            1.007898391, 1.058293311, 0.04325799382, 0.04410499577, 0.04325799382,
        ),
        'stem7x7_s2': (
            70.54130398, 64.68974428, 10.27643643, 8.671181202, 28.66050804, 22.72461389,
            6.471742591, 6.795329721, 4.031390347, 4.232959865, 106.1653243, 111.4735905,
            50.72197121, 53.25806977, 6.440883997, 0.4264792549, 6.440883997,
        ),
        'conv5x5_odd': (
            1.979593565, 1.742562736, 1.014001452, 0.8513828535, 1.057691303, 0.8465676122,
            0.3328636749, 0.3495068586, 0.28383291, 0.2980245555, 0.8909546861, 0.9355024204,
            0.6424724809, 0.674596105, 0.6324531753, 0.02612475303, 0.6324531753,
        ),
        'dense': (
            1.086734149, 4.004750381, 0.8607724285, 3.153844962, 0.8531314463, 3.145821931,
            22.90705617, 24.05240898, 51.08361981, 53.6378008, 0.6017220381, 0.63180814,
            0.03048941575, 0.03201388654, 0.8715651143, 0.2968419145, 0.8715651143,
        ),
    },
    ('jetson-orin-nano', 'a78ae1:2'): {
        'conv3x3': (
            16.64111066, 16.15185479, 11.86675497, 11.5244551, 10.22870346, 9.701965386,
            8.571030464, 8.999581987, 5.185070199, 5.444323709, 8.906984006, 9.352333206,
            3.98570596, 4.184991258, 8.050485828, 0.1834466519, 8.050485828,
        ),
        'conv1x1_s2_n2': (
            1.522126376, 1.529414393, 1.592508609, 1.618062517, 1.448996026, 1.467374305,
            8.124556291, 8.530784106, 5.154256954, 5.411969801, 25.28020581, 26.5442161,
            0.8438569536, 0.8860498013, 0.9619984106, 0.4345112583, 0.9619984106,
        ),
        'depthwise3x3': (
            9.792233113, 6.24048997, 2.449849007, 1.905909934, 6.552545695, 3.704822781,
            4.272646358, 4.486278675, 2.740898013, 2.877942914, 2.977769245, 3.126657707,
            1.576593377, 1.655423046, 0.06453666589, 0.09114348786, 0.06453666589,
        ),
        'stem7x7_s2': (
            96.90197086, 97.28216344, 13.0377351, 12.68078742, 34.27073113, 32.47612728,
            9.115602649, 9.571382781, 5.734871523, 6.021615099, 85.45228005, 89.72489406,
            79.34125563, 83.30831841, 8.528937748, 0.6671152318, 8.528937748,
        ),
        'conv5x5_odd': (
            2.542251656, 2.509398856, 1.3056883, 1.26941755, 1.218956291, 1.15421702, 0.4666548933,
            0.489987638, 0.394919794, 0.4146657837, 0.7029232266, 0.7380693879, 1.004980132,
            1.055229139, 0.8409780132, 0.04086534216, 0.8409780132,
        ),
        'dense': (
            1.532807144, 2.972766743, 1.215157174, 2.347094437, 1.203204857, 2.334544503,
            27.42733628, 28.79870309, 60.99512693, 64.04488328, 0.3210955639, 0.3371503421,
            0.04769271523, 0.05007735099, 1.157463311, 0.1562321776, 1.157463311,
        ),
    },
    ('jetson-orin-nano', 'gpu:1'): {
        'conv3x3': (
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.546096, INF,
            INF,
        ),
        'conv1x1_s2_n2': (
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.087344, INF,
            INF,
        ),
        'depthwise3x3': (
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.03891105882,
            INF, INF,
        ),
        'stem7x7_s2': (
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.556848, INF,
            INF,
        ),
        'conv5x5_odd': (
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.07954285714,
            INF, INF,
        ),
        'dense': (
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.1506498824, INF,
            INF,
        ),
    },
    ('jetson-tx2', 'denver:1'): {
        'conv3x3': (
            35.55610489, 37.33391014, 25.23930081, 26.50126585, 25.80291115, 27.09305671,
            15.88718231, 16.68154143, 9.368931695, 9.83737828, 12.18972541, 12.79921168, 2.95745258,
            3.105325209, 21.67287666, 0.09228632269, 21.67287666,
        ),
        'conv1x1_s2_n2': (
            3.563580374, 3.741759392, 3.137254616, 3.294117346, 3.030766164, 3.182304472,
            15.65212776, 16.43473415, 9.562598526, 10.04072845, 35.14427743, 36.9014913,
            0.6261542998, 0.6574620147, 2.546468796, 0.3224137592, 2.546468796,
        ),
        'depthwise3x3': (
            13.50779754, 14.18318742, 2.847118287, 2.989474201, 9.766369674, 10.25468816,
            8.487398526, 8.911768452, 5.376479607, 5.645303587, 3.987067205, 4.186420565,
            1.169855528, 1.228348305, 0.05347967948, 0.05119213759, 0.05347967948,
        ),
        'stem7x7_s2': (
            148.9725877, 156.4212171, 27.08794384, 28.44234103, 85.98430663, 90.28352197,
            12.54207371, 13.1691774, 7.530386241, 7.906905553, 122.2404352, 128.352457, 58.87238133,
            61.81600039, 22.96385258, 0.4950093366, 22.96385258,
        ),
        'conv5x5_odd': (
            4.486879607, 4.711223587, 2.566761671, 2.695099754, 2.947726781, 3.09511312,
            0.7712157248, 0.8097765111, 0.6505225225, 0.6830486486, 0.949512633, 0.9969882646,
            0.7457100737, 0.7829955774, 2.219927273, 0.03032268632, 2.219927273,
        ),
        'dense': (
            4.201250957, 4.411313505, 3.309003112, 3.474453268, 3.300134316, 3.465141032,
            68.64248976, 72.07461425, 153.9148698, 161.6106133, 0.3368399666, 0.353681965,
            0.03538869779, 0.03715813268, 3.073879115, 0.163755057, 3.073879115,
        ),
    },
    ('jetson-xavier-nx', 'carmel0:2'): {
        'conv3x3': (
            13.17675778, 12.78935539, 9.396329313, 9.125289565, 8.075900017, 7.657649082,
            6.786710016, 7.126045517, 4.105640273, 4.310922286, 7.533415769, 7.910086558,
            3.155960147, 3.313758154, 6.374532564, 0.09848068519, 6.374532564,
        ),
        'conv1x1_s2_n2': (
            1.146779552, 1.149626848, 1.073875663, 1.084754553, 1.007015557, 1.014551442,
            6.43318301, 6.75484216, 4.081241741, 4.285303828, 20.97874505, 22.02768231,
            0.6681824856, 0.7015916099, 0.7617292082, 0.2037266212, 0.7617292082,
        ),
        'depthwise3x3': (
            7.753682223, 4.941342346, 1.93983849, 1.509136864, 5.18843419, 2.933551337, 3.383165181,
            3.55232344, 2.170296801, 2.278811641, 2.576468564, 2.705291992, 1.248377556,
            1.310796434, 0.04623290246, 0.05462821185, 0.04623290246,
        ),
        'stem7x7_s2': (
            76.72888096, 77.02992491, 10.32353435, 10.04089617, 26.91405116, 25.48193935,
            7.217912952, 7.5788086, 4.540983744, 4.768032931, 68.01458738, 71.41531675, 62.82396224,
            65.96516036, 6.753380178, 0.306049059, 6.753380178,
        ),
        'conv5x5_odd': (
            1.797471305, 1.760681143, 0.9772920818, 0.9457433141, 0.9651934976, 0.9139316728,
            0.3351218318, 0.3518779234, 0.2871805628, 0.301539591, 0.5868254204, 0.6161666915,
            0.7957629785, 0.8355511274, 0.6659028841, 0.03235797937, 0.6659028841,
        ),
        'dense': (
            1.213706758, 2.353895009, 0.9621852823, 1.858475406, 0.9527212026, 1.848538123,
            21.70160811, 22.78668852, 48.26226272, 50.67537585, 0.3834678159, 0.4026412067,
            0.03776402727, 0.03965222863, 0.91650215, 0.1883167278, 0.91650215,
        ),
    },
    ('odroid-xu4', 'little:1'): {
        'conv3x3': (
            194.5597642, 204.2877524, 137.8597633, 144.7527514, 149.8619967, 157.3550966,
            81.74641143, 85.833732, 47.61064, 49.991172, 65.892611, 69.18724155, 4.298868571,
            4.513812, 125.9308686, 0.3252914286, 125.9308686,
        ),
        'conv1x1_s2_n2': (
            20.45020779, 21.47271818, 16.37057469, 17.18910343, 16.21578612, 17.02657543, 81.9972,
            86.09706, 49.22517714, 51.686436, 193.0001081, 202.6501135, 0.91016, 0.955668,
            14.72446857, 0.4686514286, 14.72446857,
        ),
        'depthwise3x3': (
            73.62220571, 77.303316, 13.04121633, 13.69327714, 56.61498939, 59.44573886, 45.07029714,
            47.323812, 28.39372571, 29.813412, 21.75111393, 22.83866962, 1.700468571, 1.785492,
            0.1753307766, 0.1460914286, 0.1753307766,
        ),
        'stem7x7_s2': (
            691.0078971, 725.558292, 146.5785878, 153.9075171, 497.7787314, 522.667668, 53.80291429,
            56.49306, 31.10801143, 32.663412, 690.4344179, 724.9561387, 85.57521143, 89.853972,
            133.4369714, 0.7195314286, 133.4369714,
        ),
        'conv5x5_odd': (
            22.722, 23.8581, 14.24685714, 14.9592, 17.01330286, 17.863968, 4.109527619, 4.315004,
            3.425885714, 3.59718, 5.08111482, 5.335170561, 1.083942857, 1.13814, 12.82586286,
            0.04407619048, 12.82586286,
        ),
        'dense': (
            24.27438199, 25.48810109, 19.08438667, 20.038606, 19.07149524, 20.02507, 397.2274286,
            417.0888, 892.9866286, 937.63596, 1.215815173, 1.276605931, 0.05144, 0.054012,
            17.79098286, 0.5883700863, 17.79098286,
        ),
    },
    ('rk3399', 'big:2'): {
        'conv3x3': (
            24.7639701, 23.7853017, 17.60528889, 16.91576133, 17.04476741, 16.15518178, 11.62534222,
            12.20660933, 6.920097778, 7.266102667, 17.38856341, 18.25799158, 3.343564444,
            3.510742667, 13.48581511, 0.2530044444, 13.48581511,
        ),
        'conv1x1_s2_n2': (
            2.483928081, 2.492662667, 2.186977778, 2.205606667, 2.066586667, 2.079196, 11.2956,
            11.86038, 6.995048889, 7.344801333, 46.94736135, 49.29472942, 0.7079022222,
            0.7432973333, 1.592908444, 0.3645066667, 1.592908444,
        ),
        'depthwise3x3': (
            15.15467556, 9.131914061, 3.199591111, 2.241446667, 10.94977778, 6.169734667,
            6.059475556, 6.362449333, 3.855408889, 4.048179333, 6.794505724, 7.134231011,
            1.322586667, 1.388716, 0.08378266667, 0.05787555556, 0.08378266667,
        ),
        'stem7x7_s2': (
            117.1677867, 115.535056, 19.04371111, 18.30329667, 56.93903556, 53.90010733,
            10.33684444, 10.85368667, 6.33552, 6.652296, 140.8396975, 147.8816824, 66.55849778,
            69.88642267, 14.28855111, 0.5596355556, 14.28855111,
        ),
        'conv5x5_odd': (
            3.392666667, 3.293913636, 2.015128889, 1.945498333, 2.012568889, 1.902322333, 0.68584,
            0.720132, 0.4890518519, 0.5135044444, 1.300393982, 1.365413681, 0.8430666667, 0.88522,
            1.389863111, 0.03428148148, 1.389863111,
        ),
        'dense': (
            2.532071246, 4.946021535, 1.998551852, 3.895680444, 1.988525185, 3.885152444,
            45.47914815, 47.75310556, 101.8389056, 106.9308508, 1.350547917, 1.418075312,
            0.04000888889, 0.04200933333, 1.920855111, 0.67, 1.920855111,
        ),
    },
    ('rpi4', 'a72:3'): {
        'conv3x3': (
            23.70772267, 21.1772176, 16.87126705, 15.08356, 15.73233117, 13.59931893, 11.48359467,
            12.0577744, 6.874485333, 7.2182096, 19.9139561, 20.9096539, 4.012277333, 4.2128912,
            11.77634773, 0.3036053333, 11.77634773,
        ),
        'conv1x1_s2_n2': (
            2.297589333, 2.2189328, 2.087632762, 2.0399504, 1.943163429, 1.8882576, 11.06298667,
            11.616136, 6.908362667, 7.2537808, 54.43219362, 57.1538033, 0.8494826667, 0.8919568,
            1.397083733, 0.437408, 1.397083733,
        ),
        'depthwise3x3': (
            18.63661867, 8.203048, 3.913881905, 2.2353872, 13.49409676, 5.2388432, 5.894688,
            6.1894224, 3.761002667, 3.9490528, 7.600446869, 7.980469213, 1.587104, 1.6664592,
            0.0860536, 0.06945066667, 0.0860536,
        ),
        'stem7x7_s2': (
            120.6464533, 114.122232, 18.34369524, 16.42376, 52.648, 45.414544, 10.90813511,
            11.45354187, 6.754656, 7.0923888, 168.310677, 176.7262108, 79.87019733, 83.8637072,
            12.47691733, 0.6715626667, 12.47691733,
        ),
        'conv5x5_odd': (
            3.4232, 3.144493333, 2.006767238, 1.821504533, 1.90593981, 1.647770133, 0.709088,
            0.7445424, 0.4918222222, 0.5164133333, 1.500568778, 1.575597217, 1.01168, 1.062264,
            1.219880533, 0.04113777778, 1.219880533,
        ),
        'dense': (
            2.152910222, 6.094584533, 1.702453079, 4.800026933, 1.690421079, 4.787393333,
            42.06764444, 44.17102667, 94.06518667, 98.768446, 1.3646575, 1.432890375, 0.04801066667,
            0.0504112, 1.683291733, 0.676, 1.683291733,
        ),
    },
    ('rpi5', 'a76:1'): {
        'conv3x3': (
            16.2578503, 17.07074282, 11.56459524, 12.142825, 10.96454698, 11.51277433, 7.768606667,
            8.157037, 4.639273333, 4.871237, 8.60429321, 9.03450787, 2.507673333, 2.633057,
            9.196313333, 0.07825111111, 9.196313333,
        ),
        'conv1x1_s2_n2': (
            1.560237374, 1.638249242, 1.511901905, 1.587497, 1.421608571, 1.492689, 7.5117,
            7.887285, 4.673886667, 4.907581, 21.90609437, 23.00139908, 0.5309266667, 0.557473,
            1.087513333, 0.27338, 1.087513333,
        ),
        'depthwise3x3': (
            6.204686667, 6.514921, 1.54857619, 1.626005, 4.157010476, 4.364861, 4.014206667,
            4.214917, 2.558106667, 2.686012, 3.567560875, 3.745938918, 0.99194, 1.041537,
            0.07217578947, 0.04340666667, 0.07217578947,
        ),
        'stem7x7_s2': (
            80.18774, 84.197127, 12.54567619, 13.17296, 36.66362667, 38.496808, 7.176233333,
            7.535045, 4.42494, 4.646187, 55.95952182, 58.75749791, 49.91887333, 52.414817,
            9.743633333, 0.4197266667, 9.743633333,
        ),
        'conv5x5_odd': (
            2.2295, 2.340975, 1.1765, 1.235325, 1.261926667, 1.325023, 0.3770377778, 0.3958896667,
            0.3205888889, 0.3366183333, 0.6309854039, 0.6625346741, 0.6323, 0.663915, 0.9490733333,
            0.02571111111, 0.9490733333,
        ),
        'dense': (
            1.796019798, 1.885820788, 1.417958889, 1.488856833, 1.410438889, 1.480960833,
            29.29061111, 30.75514167, 65.45385833, 68.72655125, 1.008559124, 1.05898708,
            0.03000666667, 0.031507, 1.311113333, 0.5015643275, 1.311113333,
        ),
    },
}


def _prior(board: str, config: str, d: ir.Descriptor, keys: list[int]) -> np.ndarray:
    cm = config_matrix(load_target(board), [CoreConfig.parse(config)])
    return prior_ms(descriptor_matrix([d] * len(keys)), np.array(keys),
                    np.repeat(cm, len(keys), axis=0))


def test_existing_columns_keep_their_order():
    assert key_table().keys[:len(KEYS)] == KEYS


def test_pinned_grid_covers_every_catalogue_board():
    assert {board for board, _ in PINNED} == {b for b in list_targets() if b != "local"}


@pytest.mark.parametrize(("board", "config"), list(PINNED))
def test_prior_predictions_are_unchanged_by_declared_terms(board, config):
    keys = [primitive_key(k) for k in KEYS]
    for name, d in DESCS.items():
        np.testing.assert_allclose(_prior(board, config, d, keys), PINNED[board, config][name],
                                   rtol=1e-9, err_msg=f"{board} {config} {name}")


def test_every_shipped_conv_family_declares_its_terms_once():
    conv = [p for p in primitives.REGISTRY.values() if p.op == ir.CONV2D]
    assert conv and all(p.cost is not None for p in conv)
    for p in conv:
        assert family_cost(p.family) is p.cost  # one CostTerms per family, shared by layouts
    assert set(key_table().conv_families) == {p.family for p in conv}


# --- a toy family, registered by this test alone ---------------------------------------------
TOY_CALLS = 7.0


def _toy_work(c: Columns) -> dict[str, np.ndarray | float]:
    """A toy algorithm that costs nothing but a fixed number of numpy calls."""
    return {"calls": TOY_CALLS}


TOY_COST = CostTerms(gemm_eff=0.5, parallel=0.5, work=_toy_work)


def _toy(name: str, cost: CostTerms | None) -> Primitive:
    """Direct's code under another family name that applies to 3x3 stride-1 convs only."""
    return dataclasses.replace(
        primitives.get("direct/nchw"), name=name, family=name.split("/")[0], cost=cost,
        applies=lambda d: d.op == ir.CONV2D and d.kernel == (3, 3) and d.stride == (1, 1))


@pytest.fixture
def toy() -> Iterator[str]:
    register(_toy("toyconv/nchw", TOY_COST))
    try:
        yield "toyconv/nchw"
    finally:
        unregister("toyconv/nchw")


def test_a_registered_family_gets_its_own_key_after_the_existing_ones(toy):
    table = key_table()
    assert table.keys == (*KEYS, toy)
    assert table.keys[primitive_key(toy)] == toy
    assert table.families[table.key_family[primitive_key(toy)]] == "toyconv"


def test_the_prior_prices_a_registered_family_by_its_declared_terms(toy):
    d = conv_descriptor(64, 64, 56, 3)
    for board, config in PINNED:
        cm = config_matrix(load_target(board), [CoreConfig.parse(config)])
        ms = _prior(board, config, d, [primitive_key(toy), primitive_key("direct/nchw")])
        if cm[0, CF["is_gpu"]]:
            assert np.isinf(ms).all()  # numpy primitives do not run on a GPU
            continue
        freq_ghz = cm[0, CF["freq_mhz"]] / 1000.0
        expect = (TOY_CALLS * CALL_US + BASE_US) * 1000.0 * (2.0 / max(freq_ghz, 0.1)) * 1e-6
        assert ms[0] == pytest.approx(expect, rel=1e-12), (board, config)
        assert ms[0] < ms[1]  # not priced as direct any more


def test_the_cost_model_offers_a_registered_family_where_it_applies(toy):
    model = CostModel(load_target("rpi4"))
    conv3, conv1 = conv_descriptor(64, 64, 56, 3), conv_descriptor(64, 64, 56, 1)
    assert toy in candidates(conv3) and toy not in candidates(conv1)
    layers = [ir.Layer(name, ir.CONV2D, ["x"], ["y"], d)
              for name, d in (("c3", conv3), ("c1", conv1))]
    table = model.predict_table(layers)
    assert toy in table.candidates(0) and toy not in table.candidates(1)
    cfg = CoreConfig("a72", 4)
    assert table.best(0, cfg) == (toy, pytest.approx(table.get("c3", toy, cfg)))


def test_unregistering_restores_the_keys_and_the_direct_fallback(toy):
    unregister(toy)
    try:
        assert key_table().keys == KEYS
        assert KEYS[primitive_key(toy)] == "direct/nchw"
    finally:
        register(_toy(toy, TOY_COST))


def test_a_family_without_terms_is_priced_as_direct():
    register(_toy("plainconv/nhwc", None))
    try:
        assert key_table().keys == KEYS
        d = conv_descriptor(64, 64, 56, 3)
        a, b = _prior("rpi4", "a72:2", d, [primitive_key("plainconv/nhwc"),
                                          primitive_key("direct/nhwc")])
        assert a == b
    finally:
        unregister("plainconv/nhwc")


def test_a_family_declares_one_set_of_terms_for_all_its_layouts(toy):
    other = CostTerms(gemm_eff=0.5, parallel=0.5, work=lambda c: {"calls": 1.0})
    with pytest.raises(ValueError, match="other cost terms"):
        register(_toy("toyconv/nhwc", other))
    assert "toyconv/nhwc" not in primitives.REGISTRY


def test_an_unknown_work_term_is_an_error():
    register(_toy("typoconv/nchw", CostTerms(0.5, 0.5, lambda c: {"copies": c["io"]})))
    try:
        with pytest.raises(ValueError, match="unknown work term 'copies'"):
            _prior("rpi4", "a72:1", conv_descriptor(8, 8, 8, 3),
                   [primitive_key("typoconv/nchw")])
    finally:
        unregister("typoconv/nchw")


@pytest.mark.parametrize("board", sorted(b for b in list_targets() if b != "local"))
def test_engine_depthwise_is_one_pass_when_its_kernel_takes_the_channels(board):
    """onnxruntime's blocked depthwise kernel needs the channels to fill whole vector blocks:
    96 channels cost about one pass over their input and output, 95 channels (the same data
    less 1 %) the GEMM of one row per channel, several times more. XNNPACK (LiteRT) takes any
    count: there the two cost the same to within their sizes."""
    target = load_target(board)
    config = next(c for c in CostModel(target).configs if not c.is_gpu)
    cm = config_matrix(target, [config])
    ort, lite = primitive_key("onnxruntime"), primitive_key("litert")

    def ms(channels: int, key: int) -> float:
        d = conv_descriptor(channels, channels, 28, 3, groups=channels)
        return float(prior_ms(descriptor_matrix([d]), np.array([key]), cm)[0])

    assert ms(95, ort) > 2.0 * ms(96, ort)
    assert ms(95, lite) == pytest.approx(ms(96, lite), rel=0.05)
    assert ms(96, ort) == pytest.approx(ms(96, lite), rel=1e-9)
