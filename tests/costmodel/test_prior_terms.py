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
#: prior before the terms moved into the primitive modules (the engines' depthwise entries since
#: their blocked kernel is priced by one pass over input and output, ``prior.DEPTHWISE_BLOCK``).
PINNED = {
    ('hikey970', 'big:4'): {
        'conv3x3': (
            10.54150658, 11.06858191, 7.517618483, 7.893499407, 6.444023064, 6.766224217,
            5.464731583, 5.737968163, 3.362492803, 3.530617443, 11.66099078, 12.24404032,
            2.548016935, 2.675417782, 6.094830821, 0.07951001976, 6.094830821,
        ),
        'conv1x1_s2_n2': (
            0.9585932825, 1.006522947, 1.043782751, 1.095971888, 0.9520367727, 0.9996386113,
            5.212470787, 5.473094327, 3.417415749, 3.588286537, 32.59650406, 34.22632926,
            0.5394682472, 0.5664416596, 0.7274797629, 0.2777781541, 0.7274797629,
        ),
        'depthwise3x3': (
            4.068855669, 4.272298453, 1.204823999, 1.265065199, 2.467304705, 2.590669941,
            2.777422523, 2.916293649, 1.899342083, 1.994309187, 4.107961772, 4.31335986,
            1.007898391, 1.058293311, 0.04325799382, 0.04410499577, 0.04325799382,
        ),
        'stem7x7_s2': (
            61.57492633, 64.65367265, 8.250505625, 8.663030906, 21.61549704, 22.69627189,
            5.803359865, 6.093527858, 3.661209145, 3.844269602, 106.1653243, 111.4735905,
            50.72197121, 53.25806977, 6.444978831, 0.4264792549, 6.444978831,
        ),
        'conv5x5_odd': (
            1.610010777, 1.690511316, 0.7793691787, 0.8183376376, 0.7673048264, 0.8056700677,
            0.2780739486, 0.2919776461, 0.2587101327, 0.2716456393, 0.8909546861, 0.9355024204,
            0.6424724809, 0.674596105, 0.6490556026, 0.02612475303, 0.6490556026,
        ),
        'dense': (
            1.979458497, 2.078431422, 1.562198702, 1.640308637, 1.554557719, 1.632285605,
            32.29158199, 33.90616109, 72.19880292, 75.80874307, 0.6017220381, 0.63180814,
            0.03048941575, 0.03201388654, 1.631989162, 0.2968419145, 1.631989162,
        ),
    },
    ('jetson-orin-nano', 'a78ae1:2'): {
        'conv3x3': (
            15.38271884, 16.15185479, 10.97567152, 11.5244551, 9.239967035, 9.701965386,
            8.090394702, 8.494914437, 4.986807947, 5.236148344, 8.906984006, 9.352333206,
            3.98570596, 4.184991258, 8.07090649, 0.1834466519, 8.07090649,
        ),
        'conv1x1_s2_n2': (
            1.456585136, 1.529414393, 1.541011921, 1.618062517, 1.397499338, 1.467374305,
            7.686643709, 8.070975894, 5.052121854, 5.304727947, 25.28020581, 26.5442161,
            0.8438569536, 0.8860498013, 0.9667539073, 0.4345112583, 0.9667539073,
        ),
        'depthwise3x3': (
            5.943323781, 6.24048997, 1.815152318, 1.905909934, 3.528402649, 3.704822781,
            4.081727152, 4.28581351, 2.789712583, 2.929198212, 2.977769245, 3.126657707,
            1.576593377, 1.655423046, 0.06453666589, 0.09114348786, 0.06453666589,
        ),
        'stem7x7_s2': (
            92.64967947, 97.28216344, 12.0769404, 12.68078742, 30.92964503, 32.47612728,
            8.802299338, 9.242414305, 5.56965298, 5.848135629, 85.45228005, 89.72489406,
            79.34125563, 83.30831841, 8.534357616, 0.6671152318, 8.534357616,
        ),
        'conv5x5_odd': (
            2.389903672, 2.509398856, 1.208969095, 1.26941755, 1.099254305, 1.15421702,
            0.4544164827, 0.4771373068, 0.4141118469, 0.4348174393, 0.7029232266, 0.7380693879,
            1.004980132, 1.055229139, 0.8629527594, 0.04086534216, 0.8629527594,
        ),
        'dense': (
            2.831206422, 2.972766743, 2.235328035, 2.347094437, 2.223375717, 2.334544503,
            46.19174025, 48.50132726, 103.2150359, 108.3757877, 0.3210955639, 0.3371503421,
            0.04769271523, 0.05007735099, 2.163950199, 0.1562321776, 2.163950199,
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
            INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, INF, 0.1506498824,
            INF, INF,
        ),
    },
    ('jetson-tx2', 'denver:1'): {
        'conv3x3': (
            35.63947501, 37.42144876, 25.29833626, 26.56325307, 25.86841624, 27.16183705,
            16.02304472, 16.82419695, 9.674622113, 10.15835322, 12.18972541, 12.79921168,
            2.95745258, 3.105325209, 21.72797641, 0.09228632269, 21.72797641,
        ),
        'conv1x1_s2_n2': (
            3.581077805, 3.760131695, 3.151002597, 3.308552727, 3.044514145, 3.196739853,
            15.92385258, 16.72004521, 10.17397936, 10.68267833, 35.14427743, 36.9014913,
            0.6261542998, 0.6574620147, 2.559300246, 0.3224137592, 2.559300246,
        ),
        'depthwise3x3': (
            13.63285271, 14.31449535, 2.86774026, 3.011127273, 9.864627308, 10.35785867,
            8.781767076, 9.22085543, 6.038808845, 6.340749287, 3.987067205, 4.186420565,
            1.169855528, 1.228348305, 0.05347967948, 0.05119213759, 0.05347967948,
        ),
        'stem7x7_s2': (
            149.0419342, 156.4940309, 27.1036125, 28.45879312, 86.03879312, 90.34073278,
            12.56283047, 13.19097199, 7.577088943, 7.955943391, 122.2404352, 128.352457,
            58.87238133, 61.81600039, 22.97847666, 0.4950093366, 22.97847666,
        ),
        'conv5x5_odd': (
            4.586946616, 4.816293947, 2.630289926, 2.761804423, 3.02635086, 3.177668403,
            0.8299217035, 0.8714177887, 0.7826109746, 0.8217415233, 0.949512633, 0.9969882646,
            0.7457100737, 0.7829955774, 2.279220311, 0.03032268632, 2.279220311,
        ),
        'dense': (
            7.904530832, 8.299757373, 6.218723014, 6.529659165, 6.209854218, 6.520346929,
            129.2616544, 135.7247371, 290.3079902, 304.8233897, 0.3368399666, 0.353681965,
            0.03538869779, 0.03715813268, 5.78961769, 0.163755057, 5.78961769,
        ),
    },
    ('jetson-xavier-nx', 'carmel0:2'): {
        'conv3x3': (
            12.18033847, 12.78935539, 8.690751966, 9.125289565, 7.292999126, 7.657649082,
            6.406133193, 6.726439853, 3.948652334, 4.14608495, 7.533415769, 7.910086558,
            3.155960147, 3.313758154, 6.390702045, 0.09848068519, 6.390702045,
        ),
        'conv1x1_s2_n2': (
            1.094882713, 1.149626848, 1.033099575, 1.084754553, 0.9662394686, 1.014551442,
            6.086435239, 6.390757001, 4.000369166, 4.200387625, 20.97874505, 22.02768231,
            0.6681824856, 0.7015916099, 0.7654947037, 0.2037266212, 0.7654947037,
        ),
        'depthwise3x3': (
            4.70604033, 4.941342346, 1.437273204, 1.509136864, 2.793858416, 2.933551337,
            3.23199161, 3.39359119, 2.208949135, 2.319396592, 2.576468564, 2.705291992,
            1.248377556, 1.310796434, 0.04623290246, 0.05462821185, 0.04623290246,
        ),
        'stem7x7_s2': (
            73.36183325, 77.02992491, 9.562758259, 10.04089617, 24.26851366, 25.48193935,
            6.969833246, 7.318324908, 4.410160461, 4.630668485, 68.01458738, 71.41531675,
            62.82396224, 65.96516036, 6.757671736, 0.306049059, 6.757671736,
        ),
        'conv5x5_odd': (
            1.676839184, 1.760681143, 0.9007079182, 0.9457433141, 0.8704111169, 0.9139316728,
            0.3254312183, 0.3417027792, 0.3023772068, 0.3174960671, 0.5868254204, 0.6161666915,
            0.7957629785, 0.8355511274, 0.6833029191, 0.03235797937, 0.6833029191,
        ),
        'dense': (
            2.24180477, 2.353895009, 1.769976578, 1.858475406, 1.760512498, 1.848538123,
            36.55963118, 38.38761274, 81.69281463, 85.77745536, 0.3834678159, 0.4026412067,
            0.03776402727, 0.03965222863, 1.713458207, 0.1883167278, 1.713458207,
        ),
    },
    ('odroid-xu4', 'little:1'): {
        'conv3x3': (
            195.0445018, 204.7967269, 138.2030122, 145.1131629, 150.242862, 157.7550051,
            82.53635429, 86.663172, 49.38801143, 51.857412, 65.892611, 69.18724155, 4.298868571,
            4.513812, 126.2512343, 0.3252914286, 126.2512343,
        ),
        'conv1x1_s2_n2': (
            20.55194286, 21.57954, 16.45050939, 17.27303486, 16.29572082, 17.11050686, 83.57708571,
            87.75594, 52.77992, 55.418916, 193.0001081, 202.6501135, 0.91016, 0.955668,
            14.79907429, 0.4686514286, 14.79907429,
        ),
        'depthwise3x3': (
            74.34931221, 78.06677782, 13.16111837, 13.81917429, 57.18628735, 60.04560171, 46.78184,
            49.120932, 32.24469714, 33.856932, 21.75111393, 22.83866962, 1.700468571, 1.785492,
            0.1753307766, 0.1460914286, 0.1753307766,
        ),
        'stem7x7_s2': (
            691.4110971, 725.981652, 146.6696898, 154.0031743, 498.0955314, 523.000308, 53.9236,
            56.61978, 31.37955429, 32.948532, 690.4344179, 724.9561387, 85.57521143, 89.853972,
            133.522, 0.7195314286, 133.522,
        ),
        'conv5x5_odd': (
            23.30381818, 24.46900909, 14.61622857, 15.34704, 17.47044571, 18.343968, 4.450860952,
            4.673404, 4.193885714, 4.40358, 5.08111482, 5.335170561, 1.083942857, 1.13814,
            13.17060952, 0.04407619048, 13.17060952,
        ),
        'dense': (
            45.80630926, 48.09662473, 36.00232952, 37.802446, 35.9894381, 37.78891, 749.6845714,
            787.1688, 1686.0152, 1770.31596, 1.215815173, 1.276605931, 0.05144, 0.054012,
            33.58106286, 0.5883700863, 33.58106286,
        ),
    },
    ('rk3399', 'big:2'): {
        'conv3x3': (
            22.65266828, 23.7853017, 16.11024889, 16.91576133, 15.38588741, 16.15518178,
            10.81894222, 11.35988933, 6.587457778, 6.916830667, 17.38856341, 18.25799158,
            3.343564444, 3.510742667, 13.52007644, 0.2530044444, 13.52007644,
        ),
        'conv1x1_s2_n2': (
            2.373964444, 2.492662667, 2.100577778, 2.205606667, 1.980186667, 2.079196, 10.56088,
            11.088924, 6.823688889, 7.164873333, 46.94736135, 49.29472942, 0.7079022222,
            0.7432973333, 1.600887111, 0.3645066667, 1.600887111,
        ),
        'depthwise3x3': (
            8.69706101, 9.131914061, 2.134711111, 2.241446667, 5.875937778, 6.169734667,
            5.739155556, 6.026113333, 3.937308889, 4.134174333, 6.794505724, 7.134231011,
            1.322586667, 1.388716, 0.08378266667, 0.05787555556, 0.08378266667,
        ),
        'stem7x7_s2': (
            110.0333867, 115.535056, 17.43171111, 18.30329667, 51.33343556, 53.90010733,
            9.811191111, 10.30175067, 6.05832, 6.361236, 140.8396975, 147.8816824, 66.55849778,
            69.88642267, 14.29764444, 0.5596355556, 14.29764444,
        ),
        'conv5x5_odd': (
            3.137060606, 3.293913636, 1.852855556, 1.945498333, 1.811735556, 1.902322333,
            0.6653066667, 0.698572, 0.5212518519, 0.5473144444, 1.300393982, 1.365413681,
            0.8430666667, 0.88522, 1.426731852, 0.03428148148, 1.426731852,
        ),
        'dense': (
            4.7104967, 4.946021535, 3.710171852, 3.895680444, 3.700145185, 3.885152444,
            76.96164815, 80.80973056, 172.6745306, 181.3082571, 1.350547917, 1.418075312,
            0.04000888889, 0.04200933333, 3.609516444, 0.67, 3.609516444,
        ),
    },
    ('rpi4', 'a72:3'): {
        'conv3x3': (
            20.12730667, 21.133672, 14.33592838, 15.0527248, 12.91914717, 13.56510453, 10.06433067,
            10.5675472, 6.164853333, 6.473096, 19.9139561, 20.9096539, 4.012277333, 4.2128912,
            11.80624853, 0.3036053333, 11.80624853,
        ),
        'conv1x1_s2_n2': (
            2.104565333, 2.2097936, 1.935971048, 2.0327696, 1.791501714, 1.8810768, 9.696288,
            10.1811024, 6.317002667, 6.6328528, 54.43219362, 57.1538033, 0.8494826667, 0.8919568,
            1.404046933, 0.437408, 1.404046933,
        ),
        'depthwise3x3': (
            7.750218667, 8.1377296, 2.118681905, 2.224616, 4.940496762, 5.1875216, 5.211338667,
            5.4719056, 3.568810667, 3.7472512, 7.600446869, 7.980469213, 1.587104, 1.6664592,
            0.0860536, 0.06945066667, 0.0860536,
        ),
        'stem7x7_s2': (
            108.653344, 114.0860112, 15.6338819, 16.415576, 43.22484267, 45.3860848, 10.01671467,
            10.5175504, 6.266784, 6.5801232, 168.310677, 176.7262108, 79.87019733, 83.8637072,
            12.48485333, 0.6715626667, 12.48485333,
        ),
        'conv5x5_odd': (
            2.944977778, 3.092226667, 1.703164444, 1.788322667, 1.530193778, 1.606703467,
            0.6454672593, 0.6777406222, 0.4800888889, 0.5040933333, 1.500568778, 1.575597217,
            1.01168, 1.062264, 1.252056889, 0.04113777778, 1.252056889,
        ),
        'dense': (
            3.962190222, 4.160299733, 3.124030222, 3.280231733, 3.111998222, 3.267598133,
            64.68364444, 67.91782667, 144.9511867, 152.198746, 1.3646575, 1.432890375,
            0.04801066667, 0.0504112, 3.157032533, 0.676, 3.157032533,
        ),
    },
    ('rpi5', 'a76:1'): {
        'conv3x3': (
            16.29319576, 17.10785555, 11.58962381, 12.169105, 10.99231841, 11.54193433,
            7.826206667, 8.217517, 4.768873333, 5.007317, 8.60429321, 9.03450787, 2.507673333,
            2.633057, 9.219673333, 0.07825111111, 9.219673333,
        ),
        'conv1x1_s2_n2': (
            1.567655556, 1.646038333, 1.517730476, 1.593617, 1.427437143, 1.498809, 7.6269,
            8.008245, 4.933086667, 5.179741, 21.90609437, 23.00139908, 0.5309266667, 0.557473,
            1.092953333, 0.27338, 1.092953333,
        ),
        'depthwise3x3': (
            6.257704848, 6.570590091, 1.557319048, 1.635185, 4.198667619, 4.408601, 4.139006667,
            4.345957, 2.838906667, 2.980852, 3.567560875, 3.745938918, 0.99194, 1.041537,
            0.07217578947, 0.04340666667, 0.07217578947,
        ),
        'stem7x7_s2': (
            80.21714, 84.227997, 12.55231905, 13.179935, 36.68672667, 38.521063, 7.185033333,
            7.544285, 4.44474, 4.666977, 55.95952182, 58.75749791, 49.91887333, 52.414817,
            9.749833333, 0.4197266667, 9.749833333,
        ),
        'conv5x5_odd': (
            2.271924242, 2.385520455, 1.203433333, 1.263605, 1.29526, 1.360023, 0.4019266667,
            0.422023, 0.3765888889, 0.3954183333, 0.6309854039, 0.6625346741, 0.6323, 0.663915,
            0.9742111111, 0.02571111111, 0.9742111111,
        ),
        'dense': (
            3.366056162, 3.53435897, 2.651558889, 2.784136833, 2.644038889, 2.776240833,
            54.99061111, 57.74014167, 123.2788583, 129.4428013, 1.008559124, 1.05898708,
            0.03000666667, 0.031507, 2.462473333, 0.5015643275, 2.462473333,
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
