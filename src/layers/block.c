#include "layers/block.h"

#include "core/error.h"

const mt_block_kind *mt_block_kind_of(mt_layer_kind layer)
{
    switch (layer) {
    case MT_LAYER_MAMBA2:
        return &mt_block_mamba2;
    case MT_LAYER_MAMBA1:
        return &mt_block_mamba1;
    }
    mt_fatal("no block kind for layer %d", (int)layer);
}
